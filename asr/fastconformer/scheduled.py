"""Many recognition sessions at once on the chunk scheduler: one lane runs the encoder step for all of
them in batches (continuous batching, slot-pooled state); each session decodes its own chunks."""

from __future__ import annotations

import asyncio

import numpy as np
import torch

from streaming.scheduler import ChunkScheduler

from .recognizer import Hypothesis, Recognizer, Session


async def _stream_one(scheduler: ChunkScheduler, lane: str, session: Session, audio: np.ndarray,
                      piece: int) -> list[Hypothesis]:
    stream = scheduler.open_stream(lane)
    events: list[Hypothesis] = []

    async def run(chunks) -> None:
        for features, valid in chunks:
            out = await stream.process({"features": features, "valid": torch.tensor(valid)})
            events.extend(session.consume(out["encoded"], int(out["length"])))

    try:
        for start in range(0, len(audio), piece):
            await run(session.chunks_for(audio[start : start + piece]))
        await run(session.chunks_at_end())
        events.extend(session.end())
    finally:
        await stream.close()
    return events


async def transcribe_many(recognizer: Recognizer, audios: list[np.ndarray], *, concurrency: int = 16,
                          piece_s: float = 0.1, max_wait_ms: float = 2.0) -> list[list[Hypothesis]]:
    """Every signal streams in ``piece_s`` pieces as its own session, at most ``concurrency`` at a time."""
    step = recognizer.encoder_step
    piece = int(piece_s * recognizer.model.cfg.features.sample_rate)
    gate = asyncio.Semaphore(concurrency)
    async with ChunkScheduler(recognizer.backend) as scheduler:
        scheduler.add_lane(step.name, step, max_batch=concurrency, max_wait_ms=max_wait_ms, max_streams=concurrency)

        async def one(audio: np.ndarray) -> list[Hypothesis]:
            async with gate:
                return await _stream_one(scheduler, step.name, recognizer.session(), audio, piece)

        return list(await asyncio.gather(*(one(a) for a in audios)))
