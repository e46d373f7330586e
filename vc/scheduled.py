"""VC sessions on the chunk scheduler: a content lane, a VC lane and a vocoder lane run the steps of every
session in batches (slot-pooled state: the content encoder's ring, the VC step's state bank with the voice
prompt as its starting state, the vocoder's caches); each session keeps its own host side
(:class:`vc.converter.ConversionFeed`).

:class:`ScheduledConversion` is one live session (the server holds one per client); its audio equals
:class:`vc.converter.ConversionStream`'s for the same source and voice, whatever else the lanes batch with it."""

from __future__ import annotations

from concurrent.futures import Executor

import numpy as np
from torch import Tensor

from streaming.scheduler import ChunkScheduler, LaneStreams

from .converter import ConversionFeed, Converter, voice_rows


def add_vc_lanes(scheduler: ChunkScheduler, name: str, converter: Converter, *, max_streams: int, max_batch: int,
                 max_wait_ms: float, executor: Executor | None = None) -> dict[str, str]:
    """The lanes of one converter's steps, on its backend (None: the scheduler's); returns their names by the
    names the host logic asks for (``content``, ``vc``, ``vocoder``)."""
    lanes = {}
    for key, step in converter.steps.items():
        lane = scheduler.add_lane(f"{name}:{step.name}", step, max_batch=max_batch, max_wait_ms=max_wait_ms,
                                  max_streams=max_streams, executor=executor, backend=converter.backend)
        lanes[key] = lane.name
    return lanes


class ScheduledConversion:
    """``process`` 16 kHz source audio as it arrives, ``finish`` at its end, ``close`` (or ``cancel``) to free the
    slots; each returns the 22.05 kHz audio final now. ``deadline`` (``loop.time()`` seconds) tells the lanes
    by when the chunks are needed. Raises ``PoolFull`` when a lane has no free slot."""

    def __init__(self, scheduler: ChunkScheduler, lanes: dict[str, str], converter: Converter,
                 voice: dict[str, Tensor], vocoder_chunk: int | None = None) -> None:
        self.feed = ConversionFeed(converter, vocoder_chunk or converter.settings.chunk, fixed_end=True)
        self.streams = LaneStreams(scheduler, lanes, initial_states={"vc": voice_rows(voice)})

    async def process(self, audio: np.ndarray, deadline: float | None = None) -> np.ndarray:
        return await self.streams.run(self.feed.requests(audio), deadline)

    async def finish(self, deadline: float | None = None) -> np.ndarray:
        return await self.streams.run(self.feed.requests(None), deadline)

    async def close(self) -> None:
        await self.streams.close()

    def cancel(self) -> None:
        self.streams.cancel()
