"""One client's VC session, transport-free: audio in at the client's rate, the same words in the target voice
out at the same rate, chunk by chunk.

The target voice is a server voice named in ``start``, or a reference recording the client sends first:
binary frames (in the session's encoding and rate) up to a ``reference_end`` message, answered by
``voice_ready``. Only the first ``max_reference_s`` seconds are kept (the voice reads no more), so a long
reference costs no memory. After that, binary frames are the source: resampled (streaming) to 16 kHz, run on
the shared content, VC and vocoder lanes with a deadline of one chunk after the audio arrived, and the audio
final now is resampled to the client's rate and sent back as a binary frame."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import numpy as np

from streaming.blocks import StreamingResampler

from .audio import resample
from .protocol import PROTOCOL_VERSION, ProtocolError, StartRequest, encode_audio

_IDS = itertools.count(1)


class VcSession:
    task = "vc"

    def __init__(self, request: StartRequest, engine, metrics=None) -> None:
        if request.options:
            raise ProtocolError("bad_parameter", f"model {engine.name} takes no options, not {sorted(request.options)}")
        self.id = f"v{next(_IDS)}"
        self.request, self.engine, self.metrics = request, engine, metrics
        self.rate = request.sample_rate
        self.live = engine.open(engine.named_voice(request.voice)) if request.voice is not None else None
        self.to_model = StreamingResampler(self.rate, engine.input_rate)
        self.to_client = StreamingResampler(engine.sample_rate, self.rate)
        self.chunk_s = engine.chunk_ms / 1000
        self.lane = f"{engine.name}/{engine.chunk_ms:.1f}ms"
        self.reference: list[np.ndarray] = []
        self.reference_in = 0  # samples received, kept or not
        self.samples_in = 0
        self.samples_out = 0

    def ready_message(self) -> dict[str, Any]:
        return {"type": "ready", "protocol": PROTOCOL_VERSION, "session": self.id, "task": "vc",
                "model": self.engine.name, "voice": self.request.voice,
                "awaiting": "audio" if self.live is not None else "reference",
                "input": {"sample_rate": self.rate, "encoding": self.request.encoding},
                "output": {"sample_rate": self.rate, "encoding": self.request.encoding},
                "model_sample_rate": self.engine.sample_rate, "chunk_ms": self.engine.chunk_ms,
                "lookahead_ms": 0.0, "partials": False,
                "reference_s": self.engine.describe()["reference_s"]}

    async def audio(self, samples: np.ndarray, arrived: float | None = None) -> list[bytes]:
        """Reference audio until ``reference_end``, then source audio; returns the converted frames it made."""
        if self.live is None:
            self._keep_reference(samples)
            return []
        loop = asyncio.get_running_loop()
        arrived = loop.time() if arrived is None else arrived
        self.samples_in += len(samples)
        feed = self.live.feed
        before = feed.mel_done // feed.chunk
        out = await self.live.process(self.to_model.process(samples), arrived + self.chunk_s)
        done = feed.mel_done // feed.chunk - before
        if done and self.metrics is not None:
            self.metrics.observe_chunks(self.lane, done, loop.time() - arrived, self.chunk_s)
        return self._frames(out, last=False)

    def reference_end(self) -> dict[str, Any]:
        """The reference is complete: the voice is taken from it (``voice_ready``), and audio after this is
        converted. A reference too short to use is a non-fatal error: send more, then ``reference_end`` again."""
        if self.live is not None:
            raise ProtocolError("bad_message", "this session has its voice already; reference_end comes once, after "
                                "the reference audio of a session started without a voice")
        kept = np.concatenate(self.reference) if self.reference else np.zeros(0, np.float32)
        voice = self.engine.voice(resample(kept, self.rate, self.engine.sample_rate))
        self.live = self.engine.open(voice)
        self.reference = []
        return {"type": "voice_ready", "session": self.id, "reference_s": round(self.reference_in / self.rate, 3),
                "used_s": round(min(len(kept) / self.rate, self.engine.max_reference_s), 3)}

    async def end(self) -> list[dict[str, Any] | bytes]:
        """The source is complete: the last converted frames, then ``done``."""
        if self.live is None:
            raise ProtocolError("bad_message", "the reference has not ended: send reference_end after the reference "
                                "audio (or cancel)")
        deadline = asyncio.get_running_loop().time() + self.chunk_s
        tail = self.to_model.process(np.zeros(0, np.float32), last=True)
        out = [await self.live.process(tail, deadline)] if len(tail) else []
        out.append(await self.live.finish(deadline))
        await self.live.close()
        return [*self._frames(np.concatenate(out), last=True), {"type": "done", "session": self.id, **self.summary()}]

    def cancel(self) -> None:
        if self.live is not None:
            self.live.cancel()

    def summary(self) -> dict[str, Any]:
        return {"audio_s": round(self.samples_in / self.rate, 3), "output_s": round(self.samples_out / self.rate, 3),
                "reference_s": round(self.reference_in / self.rate, 3)}

    def _keep_reference(self, samples: np.ndarray) -> None:
        room = int(np.ceil(self.engine.max_reference_s * self.rate)) - sum(len(r) for r in self.reference)
        if room > 0:
            self.reference.append(samples[:room])
        self.reference_in += len(samples)

    def _frames(self, audio: np.ndarray, last: bool) -> list[bytes]:
        audio = self.to_client.process(audio, last=last)
        self.samples_out += len(audio)
        return [encode_audio(audio, self.request.encoding)] if len(audio) else []
