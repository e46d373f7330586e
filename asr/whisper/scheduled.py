"""Many causal-Whisper sessions at once on the chunk scheduler: an audio lane (encoder + cross-attention
projections) and a decoder lane, each batching the steps of every session that is ready (continuous
batching; slot-pooled caches written in place). Each session runs the same host logic as inline
(:class:`~asr.whisper.streaming.WhisperSession`), so the text is the same."""

from __future__ import annotations

import asyncio

import numpy as np

from streaming.backend import Backend
from streaming.contract import Tensors
from streaming.inline import drive_async
from streaming.scheduler import ChunkScheduler, LaneStats

from ..hypothesis import Hypothesis
from .features import SAMPLE_RATE
from .model import CausalWhisper
from .streaming import StreamConfig, WhisperSession, model_backend, whisper_steps


async def _stream_one(scheduler: ChunkScheduler, session: WhisperSession, audio: np.ndarray,
                      piece: int) -> list[Hypothesis]:
    streams = {lane: scheduler.open_stream(lane) for lane in session.lanes.values()}

    async def run(lane: str, inputs: Tensors) -> Tensors:
        return await streams[lane].process(inputs)

    try:
        events: list[Hypothesis] = []
        for start in range(0, len(audio), piece):
            events += await drive_async(session.feed(audio[start : start + piece]), run)
        return events + await drive_async(session.end(), run)
    finally:
        for stream in streams.values():
            await stream.close()


async def transcribe_many(model: CausalWhisper, audios: list[np.ndarray], cfg: StreamConfig = StreamConfig(), *,
                          concurrency: int = 16, piece_s: float = 0.1, max_wait_ms: float = 2.0,
                          stats: dict[str, LaneStats] | None = None, backend: Backend | None = None
                          ) -> list[list[Hypothesis]]:
    """Every signal streams in ``piece_s`` pieces as its own session, at most ``concurrency`` at a time, its
    steps on ``backend`` (torch where the model is by default). ``stats`` (if given) receives each lane's
    statistics (batch sizes, latencies)."""
    backend = backend or model_backend(model)
    piece = max(1, round(piece_s * SAMPLE_RATE))
    gate = asyncio.Semaphore(concurrency)
    async with ChunkScheduler(backend) as scheduler:
        for step in whisper_steps(model, cfg):
            scheduler.add_lane(step.name, step, max_batch=concurrency, max_wait_ms=max_wait_ms,
                               max_streams=concurrency, views_only=True)  # 30 s caches: never copied

        async def one(audio: np.ndarray) -> list[Hypothesis]:
            async with gate:
                return await _stream_one(scheduler, WhisperSession(model, cfg, inline=False, backend=backend), audio, piece)

        results = list(await asyncio.gather(*(one(a) for a in audios)))
        if stats is not None:
            stats.update({name: lane.stats for name, lane in scheduler.lanes.items()})
        return results
