"""Recognition sessions on the chunk scheduler: one lane runs the encoder step of every session in batches
(continuous batching, slot-pooled state); each session decodes its own chunks.

:class:`ScheduledSession` is one live session (the server and the microphone CLI hold one per client);
:func:`transcribe_many` streams whole signals through many of them at once."""

from __future__ import annotations

import asyncio

import numpy as np
import torch

from streaming.scheduler import ChunkScheduler

from ..live import stream_in_pieces
from .recognizer import Hypothesis, Recognizer, Session


class ScheduledSession:
    """A :class:`Session` whose encoder steps run on ``lane`` of ``scheduler``; ``feed`` audio pieces of any
    length, ``finish`` at the end, ``close`` (or ``cancel``) to free the slot.

    ``deadline`` (``loop.time()`` seconds) tells the lane by when the chunks of a piece are needed, so that it
    serves the most urgent streams first. ``chunks`` counts the encoder chunks run so far."""

    def __init__(self, scheduler: ChunkScheduler, lane: str, recognizer: Recognizer) -> None:
        self.session: Session = recognizer.session()
        self.stream = scheduler.open_stream(lane)
        self.chunks = 0

    async def feed(self, audio: np.ndarray, deadline: float | None = None) -> list[Hypothesis]:
        return await self._run(self.session.chunks_for(audio), deadline)

    async def finish(self, deadline: float | None = None) -> list[Hypothesis]:
        events = await self._run(self.session.chunks_at_end(), deadline)
        return events + self.session.end()

    async def close(self) -> None:
        await self.stream.close()

    def cancel(self) -> None:
        self.stream.cancel()

    async def _run(self, chunks: list[tuple[torch.Tensor, int]], deadline: float | None) -> list[Hypothesis]:
        events: list[Hypothesis] = []
        for features, valid in chunks:
            out = await self.stream.process({"features": features, "valid": torch.tensor(valid)}, deadline)
            self.chunks += 1
            events.extend(self.session.consume(out["encoded"], int(out["length"])))
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
                return await stream_in_pieces(ScheduledSession(scheduler, step.name, recognizer), audio, piece)

        return list(await asyncio.gather(*(one(a) for a in audios)))
