"""The streaming vocoder: a HiFi-GAN generator (V1, or the causal student) run chunk by chunk with a cache
per layer, equal to the offline run (shared by TTS and VC).

A convolution padded ``left`` and ``right`` needs its input up to t + right for its output at t (V1's are
symmetric; the student's right padding is 0 but in its first layer). The step keeps, for every convolution,
the last ``left + right`` input samples (for a transposed convolution, the last ``ceil((kernel - 1) /
stride)`` inputs), and emits each layer's output as soon as it is determined: a layer delays its signal by
its right padding, and the delays add up along the network. Where a residual
branch or the multi-receptive-field average joins signals of different delays, a delay line aligns them.
Every convolution's input is zeroed outside the stream's signal (before its start, after its end), which is
exactly the offline zero padding, so the first chunk and the flushed end are exact too.

The whole network then delays audio by its right receptive field (``HifiGan.receptive_field``: 12.7 mel
frames, 3,258 samples for V1; one frame, 256 samples, for the student), the least any exact streaming of it
can, and each chunk costs its own frames only: no recomputed context.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from streaming.contract import ChunkGeometry, StateSpec, StepFunction, StepSignature, Tensors, TensorSpec
from streaming.inline import Requests

from .hifigan import LRELU_SLOPE, HifiGan

NOT_ENDED = 2**40  # "the signal has not ended yet" as a frame count (any real stream is shorter)


class _Signal:
    """New samples ``x [B, C, n]`` of one signal inside a step, at ``rate`` samples per mel frame, ``delay``
    samples behind the stream's input: the first is at time ``received * rate - delay``."""

    def __init__(self, x: Tensor, delay: int, rate: int) -> None:
        self.x, self.delay, self.rate = x, delay, rate

    def like(self, x: Tensor) -> _Signal:
        return _Signal(x, self.delay, self.rate)

    def inside(self, received: Tensor, end: Tensor) -> Tensor:
        """``[B, 1, n]``: 1 where the sample lies inside the signal (the rest is the offline zero padding)."""
        t = received[:, None] * self.rate - self.delay + torch.arange(self.x.shape[-1], device=self.x.device)[None]
        return ((t >= 0) & (t < end[:, None] * self.rate))[:, None].to(self.x.dtype)


class VocoderStep(StepFunction):
    """``mel [n_mels, C]`` + ``valid`` (real frames in the chunk; fewer than ``C`` ends the signal) ->
    ``audio [C * hop]``, delayed by ``output_delay`` samples, and ``samples``: how many of them are signal (the
    rest, after the end, is silence the host drops)."""

    name = "hifigan_vocoder"

    def __init__(self, generator: HifiGan) -> None:
        super().__init__()
        self.generator = generator
        self.hop = generator.cfg.hop_length
        self.n_mels = generator.cfg.n_mels
        self._caches: list[StateSpec] = []
        self._trace = True  # a first pass over one frame records the caches' shapes and the total delay
        weight = next(generator.parameters())  # the caches follow its device and dtype (float64 references)
        device, self.dtype = weight.device, weight.dtype
        probe = _Signal(torch.zeros(1, self.n_mels, 1, device=device, dtype=self.dtype), 0, 1)
        zero, one = torch.zeros(1, dtype=torch.long, device=device), torch.ones(1, dtype=torch.long, device=device)
        with torch.no_grad():
            self.output_delay = self._network(probe, zero, one, {}, {}).delay
        self._trace = False

    @property
    def signature(self) -> StepSignature:
        left, right = self.generator.receptive_field()
        return StepSignature(
            inputs=(TensorSpec("mel", (self.n_mels, None), time_axis=1), TensorSpec("valid", (), torch.int64)),
            outputs=(TensorSpec("audio", (None,), time_axis=0), TensorSpec("samples", (), torch.int64)),
            states=(*self._caches, StateSpec("received", (), torch.int64),
                    StateSpec("end", (), torch.int64, init=NOT_ENDED)),
            geometry=ChunkGeometry(hop=1, frames_out=self.hop, lookahead=math.ceil(right),
                                   left_context=math.ceil(left), output_delay=self.output_delay),
            extra={"sample_rate": self.generator.cfg.sample_rate, "hop_length": self.hop},
        )

    def step(self, inputs: Tensors, state: Tensors) -> tuple[Tensors, Tensors]:
        mel, valid = inputs["mel"], inputs["valid"]
        chunk = mel.shape[-1]
        received = state["received"]
        end = torch.where((valid < chunk) & (state["end"] == NOT_ENDED), received + valid, state["end"])
        next_state = {"received": received + chunk, "end": end}
        audio = self._network(_Signal(mel, 0, 1), received, end, state, next_state)
        first = received * self.hop - audio.delay
        samples = torch.clamp(end * self.hop - first, 0, chunk * self.hop)  # after the end: silence
        return {"audio": audio.x[:, 0], "samples": samples}, next_state

    # The network, layer by layer, on the new samples of each signal. ``state`` holds each cache as it was,
    # ``next_state`` receives it as it will be; names follow the generator's parameters.

    def _network(self, mel: _Signal, received: Tensor, end: Tensor, state: Tensors, next_state: Tensors) -> _Signal:
        g = self.generator
        io = (received, end, state, next_state)
        x = self._conv("conv_pre", g.conv_pre, mel, *io)
        kernels = len(g.cfg.resblock_kernels)
        for i, up in enumerate(g.ups):
            x = self._up(f"ups.{i}", up, x.like(F.leaky_relu(x.x, LRELU_SLOPE)), *io)
            blocks = range(i * kernels, (i + 1) * kernels)
            branches = [self._resblock(f"resblocks.{j}", g.resblocks[j], x, *io) for j in blocks]
            latest = max(b.delay for b in branches)
            aligned = [self._delay(f"resblocks.{j}.align", b, latest - b.delay, state, next_state)
                       for j, b in zip(blocks, branches)]
            x = aligned[0].like(sum(b.x for b in aligned) / kernels)
        x = self._conv("conv_post", g.conv_post, x.like(F.leaky_relu(x.x)), *io)
        return x.like(torch.tanh(x.x))

    def _resblock(self, name: str, block, x: _Signal, received: Tensor, end: Tensor, state: Tensors,
                  next_state: Tensors) -> _Signal:
        io = (received, end, state, next_state)
        for k, (c1, c2) in enumerate(zip(block.convs1, block.convs2)):
            h = self._conv(f"{name}.convs1.{k}", c1, x.like(F.leaky_relu(x.x, LRELU_SLOPE)), *io)
            h = self._conv(f"{name}.convs2.{k}", c2, h.like(F.leaky_relu(h.x, LRELU_SLOPE)), *io)
            skip = self._delay(f"{name}.skip.{k}", x, h.delay - x.delay, state, next_state)
            x = h.like(skip.x + h.x)
        return x

    def _cached(self, name: str, x: Tensor, keep: int, state: Tensors, next_state: Tensors) -> Tensor:
        """``x`` after the ``keep`` samples before it (zeros at the stream's start); keeps the last ``keep``."""
        if self._trace:
            self._caches.append(StateSpec(name, (x.shape[1], keep), x.dtype))
            past = x.new_zeros(x.shape[0], x.shape[1], keep)
        else:
            past = state[name]
        both = torch.cat([past, x], dim=-1)
        next_state[name] = both[..., both.shape[-1] - keep :]
        return both

    def _conv(self, name: str, conv, x: _Signal, received: Tensor, end: Tensor, state: Tensors,
              next_state: Tensors) -> _Signal:
        both = self._cached(name, x.x * x.inside(received, end), conv.left + conv.right, state, next_state)
        return _Signal(F.conv1d(both, conv.weight, conv.bias, dilation=conv.dilation[0]), x.delay + conv.right, x.rate)

    def _up(self, name: str, up, x: _Signal, received: Tensor, end: Tensor, state: Tensors,
            next_state: Tensors) -> _Signal:
        stride, kernel, pad = up.stride[0], up.kernel_size[0], up.trim
        history = math.ceil((kernel - 1) / stride)  # earlier inputs that reach the new outputs
        both = self._cached(name, x.x * x.inside(received, end), history, state, next_state)
        y = F.conv_transpose1d(both, up.weight, up.bias, stride=stride)
        n = x.x.shape[-1]
        return _Signal(y[..., history * stride : (history + n) * stride], x.delay * stride + pad, x.rate * stride)

    def _delay(self, name: str, x: _Signal, samples: int, state: Tensors, next_state: Tensors) -> _Signal:
        if samples == 0:
            return x
        both = self._cached(name, x.x, samples, state, next_state)
        return _Signal(both[..., : x.x.shape[-1]], x.delay + samples, x.rate)


class VocoderFeed:
    """One stream's bookkeeping around the vocoder step, wherever the step runs (inline or on a scheduler
    lane): cuts mel frames into step chunks, and trims the steps' audio to the signal (the leading
    ``output_delay`` samples and the silence after the end)."""

    def __init__(self, step: VocoderStep, chunk: int, device: torch.device | str = "cpu") -> None:
        self.chunk, self.hop, self.n_mels = chunk, step.hop, step.n_mels
        self.flush = math.ceil(step.output_delay / step.hop)  # frames that push the delayed audio out
        self.pending = torch.zeros(step.n_mels, 0, device=device, dtype=step.dtype)
        self.to_drop = step.output_delay

    def chunks_for(self, mel: Tensor) -> list[tuple[Tensor, int]]:
        """Mel frames ``[n_mels, T]`` (natural-log magnitude) -> the full ``(chunk, valid)`` step inputs."""
        self.pending = torch.cat([self.pending, mel.to(self.pending.device, self.pending.dtype)], dim=-1)
        chunks = []
        while self.pending.shape[-1] >= self.chunk:
            chunks.append((self.pending[:, : self.chunk], self.chunk))
            self.pending = self.pending[:, self.chunk :]
        return chunks

    def chunks_at_end(self, fixed: bool) -> list[tuple[Tensor, int]]:
        """The pending frames and enough silence to push out the delayed audio: one step of just that length,
        or (``fixed``, for a lane that batches equal shapes) whole chunks."""
        valid = self.pending.shape[-1]
        frames = valid + self.flush
        if fixed:
            frames = math.ceil(frames / self.chunk) * self.chunk
        mel = torch.cat([self.pending, self.pending.new_zeros(self.n_mels, frames - valid)], dim=-1)
        self.pending = mel[:, :0]
        if not fixed:
            return [(mel, valid)]
        return [(mel[:, i : i + self.chunk], valid if i == 0 else 0) for i in range(0, frames, self.chunk)]

    def consume(self, audio: Tensor, samples: int) -> np.ndarray:
        """A step's ``audio`` and ``samples`` -> the part of the signal it holds."""
        audio = audio[:samples]
        dropped = min(self.to_drop, audio.shape[0])
        self.to_drop -= dropped
        return audio[dropped:].cpu().numpy()


def vocoder_requests(feed: VocoderFeed, chunks: list[tuple[Tensor, int]]) -> Requests[list[np.ndarray]]:
    """Host logic (``streaming.inline``) of a feed's step chunks: asks for ``"vocoder"`` steps, returns the
    audio pieces they make final."""
    pieces = []
    for mel, frames in chunks:
        made = yield "vocoder", {"mel": mel, "valid": torch.tensor(frames)}
        pieces.append(feed.consume(made["audio"], int(made["samples"])))
    return pieces


class StreamingVocoder:
    """One stream run inline: ``push`` mel frames of any count, ``finish`` at the end; each returns the
    audio that is final now. The concatenation equals ``vocode_offline`` of the whole mel. ``runner``: the
    step as a backend prepared it (ONNX Runtime), if not torch's own."""

    def __init__(self, step: VocoderStep, chunk: int = 16, runner: StepFunction | None = None) -> None:
        self.step = runner or step
        self.device = next(step.generator.parameters()).device  # the generator's: CPU, or a GPU
        self.state = self.step.initial_state(1, self.device)
        self.feed = VocoderFeed(step, chunk, self.device)

    def _run(self, chunks: list[tuple[Tensor, int]]) -> np.ndarray:
        pieces = []
        for mel, valid in chunks:
            with torch.inference_mode():
                out, self.state = self.step.step(
                    {"mel": mel[None], "valid": torch.tensor([valid], device=self.device)}, self.state)
            pieces.append(self.feed.consume(out["audio"][0], int(out["samples"][0])))
        return np.concatenate(pieces) if pieces else np.zeros(0, np.float32)

    def push(self, mel: Tensor) -> np.ndarray:
        """Mel frames ``[n_mels, T]`` (natural-log magnitude, as HiFi-GAN's training); returns new audio."""
        return self._run(self.feed.chunks_for(mel))

    def finish(self) -> np.ndarray:
        """The rest: the pending frames and the audio still delayed inside the network, in one step of just
        the frames that needs (the step takes any chunk length)."""
        return self._run(self.feed.chunks_at_end(fixed=False))


def vocode_offline(generator: HifiGan, mel: Tensor) -> np.ndarray:
    """The whole ``mel [n_mels, T]`` at once (the parity reference)."""
    with torch.inference_mode():
        return generator(mel[None].to(next(generator.parameters()).dtype))[0].numpy()
