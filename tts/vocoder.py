"""The streaming vocoder: HiFi-GAN V1 run chunk by chunk, equal to the offline run (shared by TTS and VC).

HiFi-GAN's convolutions are symmetric, so a sample depends on mel frames on both sides: its receptive field
(``HifiGan.receptive_field``, from the layer geometry) is 13.7 frames before and 12.7 after for V1, and a
perturbation test measures 12.6 and 11.8. A step therefore keeps the last ``left + lookahead`` mel frames
as its state (cached left context), and for ``C`` new frames vocodes the window ``left + lookahead + C`` and
emits the audio of its frames ``[left, left + C)``: the ``lookahead`` frames before the newest are the ones
whose future is now fully known. Every convolution's input is zeroed outside the stream's signal
(``bounds``), as the offline zero padding is, so the first chunk and the flushed end are exact too.

Cost: each chunk recomputes ``left + lookahead`` (27) frames besides its own; with 32-frame chunks that is
1.8x the offline work. Per-layer activation caches would avoid it (a follow-up); the window keeps the state
small (27 mel frames) and the step one plain module.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from streaming.contract import ChunkGeometry, StateSpec, StepFunction, StepSignature, Tensors, TensorSpec

from .hifigan import HifiGan

NOT_ENDED = 2**40  # "the signal has not ended yet" as a frame count (any real stream is shorter)


class VocoderStep(StepFunction):
    """``mel [n_mels, C]`` + ``valid`` (real frames in the chunk; fewer than ``C`` ends the signal) ->
    ``audio [C * hop]``, delayed by ``lookahead`` frames (``output_delay``), and ``samples``: how many of
    them are signal (the rest, after the end, is silence the host drops)."""

    name = "hifigan_vocoder"

    def __init__(self, generator: HifiGan, lookahead: int | None = None, left: int | None = None) -> None:
        super().__init__()
        self.generator = generator
        reach_left, reach_right = generator.receptive_field()
        self.left = math.ceil(reach_left) if left is None else left
        self.lookahead = math.ceil(reach_right) if lookahead is None else lookahead
        self.context = self.left + self.lookahead
        self.hop = generator.cfg.hop_length
        self.n_mels = generator.cfg.n_mels

    @property
    def signature(self) -> StepSignature:
        return StepSignature(
            inputs=(TensorSpec("mel", (self.n_mels, None), time_axis=1), TensorSpec("valid", (), torch.int64)),
            outputs=(TensorSpec("audio", (None,), time_axis=0), TensorSpec("samples", (), torch.int64)),
            states=(StateSpec("context", (self.n_mels, self.context)), StateSpec("received", (), torch.int64),
                    StateSpec("end", (), torch.int64, init=NOT_ENDED)),
            geometry=ChunkGeometry(hop=1, frames_out=self.hop, lookahead=self.lookahead, left_context=self.context,
                                   output_delay=self.lookahead * self.hop),
            extra={"sample_rate": self.generator.cfg.sample_rate, "hop_length": self.hop,
                   "window_frames": self.context},
        )

    def step(self, inputs: Tensors, state: Tensors) -> tuple[Tensors, Tensors]:
        mel, valid = inputs["mel"], inputs["valid"]
        chunk = mel.shape[-1]
        received = state["received"]
        end = torch.where((valid < chunk) & (state["end"] == NOT_ENDED), received + valid, state["end"])
        window = torch.cat([state["context"], mel], dim=-1)
        start = received - self.context  # the window's first frame, in the stream's frames
        bounds = torch.stack([-start, torch.minimum(end, received + chunk) - start], dim=1)
        audio = self.generator(window, bounds)[:, self.left * self.hop : (self.left + chunk) * self.hop]
        first = received - self.lookahead  # the first frame whose audio this step emits
        samples = torch.clamp(end - first, 0, chunk) * self.hop  # after the end: silence
        next_state = {"context": window[..., window.shape[-1] - self.context :], "received": received + chunk,
                      "end": end}
        return {"audio": audio, "samples": samples}, next_state


class StreamingVocoder:
    """Host side for one stream: ``push`` mel frames of any count, ``finish`` at the end; each returns the
    audio that is final now. The concatenation equals ``offline`` of the whole mel."""

    def __init__(self, step: VocoderStep, chunk: int = 32) -> None:
        self.step, self.chunk = step, chunk
        self.state = step.initial_state(1)
        self.pending = torch.zeros(step.n_mels, 0)
        self.to_drop = step.lookahead * step.hop
        self.ended = False

    def _run(self, mel: Tensor, valid: int) -> np.ndarray:
        with torch.inference_mode():
            out, self.state = self.step.step({"mel": mel[None], "valid": torch.tensor([valid])}, self.state)
        audio = out["audio"][0, : int(out["samples"][0])]
        dropped = min(self.to_drop, audio.shape[0])
        self.to_drop -= dropped
        return audio[dropped:].numpy()

    def push(self, mel: Tensor) -> np.ndarray:
        """Mel frames ``[n_mels, T]`` (natural-log magnitude, as HiFi-GAN's training); returns new audio."""
        self.pending = torch.cat([self.pending, mel.to(torch.float32)], dim=-1)
        pieces = []
        while self.pending.shape[-1] >= self.chunk:
            pieces.append(self._run(self.pending[:, : self.chunk], self.chunk))
            self.pending = self.pending[:, self.chunk :]
        return np.concatenate(pieces) if pieces else np.zeros(0, np.float32)

    def finish(self) -> np.ndarray:
        """The rest: the pending frames and the ``lookahead`` frames still held back."""
        self.ended = True
        valid = self.pending.shape[-1]
        pad = torch.zeros(self.step.n_mels, self.chunk - valid)
        pieces = [self._run(torch.cat([self.pending, pad], dim=-1), valid)]
        self.pending = torch.zeros(self.step.n_mels, 0)
        while int(self.state["received"][0]) - self.step.lookahead < int(self.state["end"][0]):
            pieces.append(self._run(torch.zeros(self.step.n_mels, self.chunk), 0))
        return np.concatenate(pieces)


def vocode_offline(generator: HifiGan, mel: Tensor) -> np.ndarray:
    """The whole ``mel [n_mels, T]`` at once (the parity reference)."""
    with torch.inference_mode():
        return generator(mel[None].to(torch.float32))[0].numpy()
