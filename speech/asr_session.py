"""One client's ASR session, transport-free: audio at the client's rate in, protocol messages out.

It resamples to the model's rate (streaming, so no audio is lost or repeated at piece edges), feeds the
model's live session with a deadline of one chunk after the audio arrived, and reports each piece's chunk
latency to the metrics. The server runs one per WebSocket session; the microphone CLI one in-process."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import numpy as np

from asr.hypothesis import Hypothesis
from streaming.blocks import StreamingResampler

from .engines import AsrEngine
from .metrics import ServiceMetrics
from .protocol import PROTOCOL_VERSION, StartRequest, transcript_message

_IDS = itertools.count(1)


class AsrSession:
    task = "asr"

    def __init__(self, request: StartRequest, engine: AsrEngine, metrics: ServiceMetrics | None = None) -> None:
        self.id = f"s{next(_IDS)}"
        self.request, self.engine, self.metrics = request, engine, metrics
        self.live, self.settings = engine.open(request.options)
        self.resampler = StreamingResampler(request.sample_rate, engine.sample_rate)
        self.chunk_s = self.settings["chunk_ms"] / 1000
        self.lane = f"{engine.name}/{self.settings['chunk_ms']:g}ms"
        self.samples_in = 0
        self.finals = 0

    def ready_message(self) -> dict[str, Any]:
        """What the server acknowledges ``start`` with: the session's parameters as it will run them."""
        return {"type": "ready", "protocol": PROTOCOL_VERSION, "session": self.id, "task": "asr",
                "model": self.engine.name,
                "input": {"sample_rate": self.request.sample_rate, "encoding": self.request.encoding},
                "model_sample_rate": self.engine.sample_rate, "output": None,
                "chunk_ms": self.settings["chunk_ms"], "lookahead_ms": self.settings["lookahead_ms"],
                "partials": self.request.partials}

    async def audio(self, samples: np.ndarray, arrived: float | None = None) -> list[dict[str, Any]]:
        """Audio that arrived at ``arrived`` (``loop.time()``; now if None); the transcripts it completed."""
        loop = asyncio.get_running_loop()
        arrived = loop.time() if arrived is None else arrived
        self.samples_in += len(samples)
        before = self.live.chunks
        events = await self.live.feed(self.resampler.process(samples), arrived + self.chunk_s)
        done = self.live.chunks - before
        if done and self.metrics is not None:
            self.metrics.observe_chunks(self.lane, done, loop.time() - arrived, self.chunk_s)
        return self._messages(events)

    async def end(self) -> list[dict[str, Any]]:
        """The client is done: the last transcripts, then ``done``."""
        deadline = asyncio.get_running_loop().time() + self.chunk_s
        tail = self.resampler.process(np.zeros(0, np.float32), last=True)
        events = await self.live.feed(tail, deadline) if len(tail) else []
        events += await self.live.finish(deadline)
        await self.live.close()
        return [*self._messages(events), {"type": "done", "session": self.id, "segments": self.finals,
                                          "audio_s": round(self.samples_in / self.request.sample_rate, 3)}]

    def cancel(self) -> None:
        self.live.cancel()

    def summary(self) -> dict[str, Any]:
        return {"audio_s": round(self.samples_in / self.request.sample_rate, 3), "segments": self.finals}

    def _messages(self, events: list[Hypothesis]) -> list[dict[str, Any]]:
        self.finals += sum(e.final for e in events)
        return [transcript_message(e) for e in events if e.final or self.request.partials]
