"""TTS sessions on the chunk scheduler: a flow lane and a vocoder lane run the steps of every session in
batches (continuous batching, slot-pooled state: a flow state bank and per-layer vocoder caches per stream);
each session keeps its own text side (front end, text window) and audio bookkeeping.

:class:`ScheduledSynthesis` is one live session (the server holds one per client); its audio equals
``StreamingSynthesizer``'s for the same text, whatever else the lanes batch with it."""

from __future__ import annotations

from concurrent.futures import Executor

import numpy as np
import torch

from streaming.backend import Backend
from streaming.inline import Requests
from streaming.scheduler import ChunkScheduler, LaneStreams

from .acoustic import AcousticModel
from .flow_step import SolverSettings
from .hifigan import HifiGan
from .synthesizer import TextFeed, step_functions
from .vocoder import VocoderFeed, vocoder_requests


def synthesis_requests(chunks: list[tuple[torch.Tensor, int]], audio: VocoderFeed, speaker: torch.Tensor,
                       last: bool) -> Requests[np.ndarray]:
    """Host logic of one stream's flow chunks (``TextFeed``'s): it asks for ``"flow"`` and ``"vocoder"`` steps
    (``streaming.inline``: run inline, or on scheduler lanes) and returns the audio they make final."""
    pieces = []
    for cond, valid in chunks:
        out = yield "flow", {"cond": cond, "valid": torch.tensor(valid), "speaker": speaker}
        pieces += yield from vocoder_requests(audio, audio.chunks_for(out["mel"][:, :valid]))
    if last:
        pieces += yield from vocoder_requests(audio, audio.chunks_at_end(fixed=True))
    return np.concatenate(pieces) if pieces else np.zeros(0, np.float32)


def add_tts_lanes(scheduler: ChunkScheduler, name: str, model: AcousticModel, vocoder: HifiGan,
                  settings: SolverSettings, *, max_streams: int, max_batch: int, max_wait_ms: float,
                  executor: Executor | None = None, backend: Backend | None = None) -> tuple[str, str]:
    """The flow and vocoder lanes of one model pair; returns their names. ``executor``: the thread the steps
    run on (torch and ONNX Runtime release the GIL inside their kernels, so the event loop stays responsive
    meanwhile); ``backend``: ONNX Runtime, or None for the scheduler's (torch)."""
    flow, vocoder_step = step_functions(model, vocoder, settings)
    lanes = []
    for step in (flow, vocoder_step):
        lane = scheduler.add_lane(f"{name}:{step.name}", step, max_batch=max_batch, max_wait_ms=max_wait_ms,
                                  max_streams=max_streams, executor=executor, backend=backend)
        lanes.append(lane.name)
    return lanes[0], lanes[1]


class ScheduledSynthesis:
    """``push`` text as it arrives, ``finish`` at its end, ``close`` (or ``cancel``) to free the slots; each
    returns the audio (float32 at the vocoder's rate) that is final now. ``deadline`` (``loop.time()``
    seconds) tells the lanes by when the chunks are needed."""

    def __init__(self, scheduler: ChunkScheduler, lanes: tuple[str, str], model: AcousticModel,
                 vocoder: HifiGan, settings: SolverSettings, voice: str, vocoder_chunk: int = 16) -> None:
        self.text = TextFeed(model, voice, settings.chunk)
        self.audio = VocoderFeed(step_functions(model, vocoder, settings)[1], vocoder_chunk)
        self.speaker = torch.tensor(self.text.speaker)
        self.streams = LaneStreams(scheduler, {"flow": lanes[0], "vocoder": lanes[1]})

    async def push(self, text: str, deadline: float | None = None) -> np.ndarray:
        requests = synthesis_requests(self.text.chunks_for(text), self.audio, self.speaker, last=False)
        return await self.streams.run(requests, deadline)

    async def finish(self, deadline: float | None = None) -> np.ndarray:
        requests = synthesis_requests(self.text.chunks_at_end(), self.audio, self.speaker, last=True)
        return await self.streams.run(requests, deadline)

    async def close(self) -> None:
        await self.streams.close()

    def cancel(self) -> None:
        self.streams.cancel()
