"""Causal-Whisper sessions on the chunk scheduler: an audio lane (encoder + cross-attention projections) and
a decoder lane, each batching the steps of every session that is ready (continuous batching; slot-pooled
caches written in place). Each session runs the same host logic as inline
(:class:`~asr.whisper.streaming.WhisperSession`), so the text is the same.

:class:`ScheduledWhisperSession` is one live session (the server holds one per client);
:func:`transcribe_many` streams whole signals through many of them at once."""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor

import numpy as np

from streaming.backend import Backend
from streaming.inline import Requests
from streaming.scheduler import ChunkScheduler, LaneStats, LaneStreams

from ..hypothesis import Hypothesis
from ..live import stream_in_pieces
from .features import SAMPLE_RATE
from .model import CausalWhisper
from .streaming import StreamConfig, WhisperSession, model_backend, whisper_steps


def add_whisper_lanes(scheduler: ChunkScheduler, model: CausalWhisper, cfg: StreamConfig, max_streams: int, *,
                      max_batch: int | None = None, max_wait_ms: float = 2.0, backend: Backend | None = None,
                      executor: Executor | None = None) -> None:
    """The audio and decoder lanes that sessions of ``cfg`` run on (on ``backend``, the scheduler's by default,
    and ``executor``'s thread if given)."""
    for step in whisper_steps(model, cfg):
        scheduler.add_lane(step.name, step, max_batch=max_batch or max_streams, max_wait_ms=max_wait_ms,
                           max_streams=max_streams, views_only=True,  # 30 s caches: never copied
                           backend=backend, executor=executor)


class ScheduledWhisperSession:
    """A :class:`WhisperSession` whose steps run on the lanes of :func:`add_whisper_lanes`; ``feed`` audio
    pieces of any length, ``finish`` at the end, ``close`` (or ``cancel``) to free the slots.
    ``chunks`` counts the encoder chunks taken so far."""

    def __init__(self, scheduler: ChunkScheduler, model: CausalWhisper, cfg: StreamConfig, backend: Backend) -> None:
        self.session = WhisperSession(model, cfg, inline=False, backend=backend)
        self.streams = LaneStreams(scheduler, {lane: lane for lane in self.session.lanes.values()})

    @property
    def chunks(self) -> int:
        return self.session.chunks_taken

    async def feed(self, audio: np.ndarray, deadline: float | None = None) -> list[Hypothesis]:
        return await self._drive(self.session.feed(audio), deadline)

    async def finish(self, deadline: float | None = None) -> list[Hypothesis]:
        return await self._drive(self.session.end(), deadline)

    async def close(self) -> None:
        await self.streams.close()

    def cancel(self) -> None:
        self.streams.cancel()

    async def _drive(self, requests: Requests[list[Hypothesis]], deadline: float | None) -> list[Hypothesis]:
        return await self.streams.run(requests, deadline)


async def transcribe_many(model: CausalWhisper, audios: list[np.ndarray], cfg: StreamConfig | None = None, *,
                          concurrency: int = 16, piece_s: float = 0.1, max_wait_ms: float = 2.0,
                          stats: dict[str, LaneStats] | None = None, backend: Backend | None = None
                          ) -> list[list[Hypothesis]]:
    """Every signal streams in ``piece_s`` pieces as its own session, at most ``concurrency`` at a time, its
    steps on ``backend`` (torch where the model is by default). ``stats`` (if given) receives each lane's
    statistics (batch sizes, latencies)."""
    cfg = cfg or StreamConfig()
    backend = backend or model_backend(model)
    piece = max(1, round(piece_s * SAMPLE_RATE))
    gate = asyncio.Semaphore(concurrency)
    async with ChunkScheduler(backend) as scheduler:
        add_whisper_lanes(scheduler, model, cfg, concurrency, max_wait_ms=max_wait_ms)

        async def one(audio: np.ndarray) -> list[Hypothesis]:
            async with gate:
                return await stream_in_pieces(ScheduledWhisperSession(scheduler, model, cfg, backend), audio, piece)

        results = list(await asyncio.gather(*(one(a) for a in audios)))
        if stats is not None:
            stats.update({name: lane.stats for name, lane in scheduler.lanes.items()})
        return results
