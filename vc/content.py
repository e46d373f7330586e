"""Content features for voice conversion: causal Whisper's encoder, one 20 ms frame at a time.

VC must not wait for a 300 ms chunk (its whole budget is 120 ms), so the encoder runs frame-causal (every
frame is its own chunk: it sees itself and the past), taking the output of its first ``layers`` layers.
The LoRA adapter of ``speech/models/whisper-base-causal-300ms`` is merged into the weights: it taught the
encoder to work without the future, which a frame-causal encoder needs even more.

Whisper's positional table holds 1500 frames (30 s). A VC session may last an hour at constant memory, so
the attention cache is a ring of ``window`` frames (each frame sees the ``window`` frames up to itself) and
frame ``n`` takes position ``n mod 1500``: streaming equals :meth:`ContentEncoder.forward` at any length.

Content frames (20 ms) map onto the vocoder's mel frames (256 samples at 22.05 kHz, 11.6 ms) by time: mel
frame ``m`` takes the content frame under its centre (:func:`content_index`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from asr.whisper.encoder import WhisperEncoderStack
from streaming.blocks.attention import additive_mask
from streaming.contract import (
    ChunkGeometry,
    RowUpdate,
    StateSpec,
    StepFunction,
    StepSignature,
    Tensors,
    TensorSpec,
)

CONTENT_FRAME_S = 0.02
MEL_RATE = 22050
MEL_HOP = 256


def content_index(mel_frames: Tensor) -> Tensor:
    """The content frame under the centre of each vocoder mel frame (integer tensor in, same shape out)."""
    centre_samples = mel_frames * MEL_HOP + MEL_HOP // 2  # at 22.05 kHz
    return torch.div(centre_samples * 50, MEL_RATE, rounding_mode="floor")  # 50 content frames a second


def mel_frames_readable(content_frames: int) -> int:
    """How many leading mel frames read only the first ``content_frames`` content frames (the inverse of
    :func:`content_frames_needed`): ``m`` with ``(256 m + 128) * 50 < 22050 * content_frames``."""
    return max(0, -(-(content_frames * MEL_RATE // 50 - MEL_HOP // 2) // MEL_HOP))


def content_frames_needed(mel_frames: int) -> int:
    """How many content frames the first ``mel_frames`` mel frames read."""
    return int(content_index(torch.tensor(mel_frames - 1))) + 1 if mel_frames > 0 else 0


def frame_causal_stem(stack: WhisperEncoderStack, mel: Tensor, mel_tail: Tensor, length: Tensor) -> tuple[Tensor, Tensor]:
    """Whisper's conv stem over ``G`` frames (mel ``[B, n_mels, 2G]`` after the two mel frames ``mel_tail``;
    ``length``: encoder frames so far) with every frame its own chunk: a frame's last first-conv output is
    computed with zeros past the frame (as ``stack.stem(mel, chunk=1)``), while the next frame sees it whole.
    One vectorised pass (no loop over frames), so ONNX export keeps ``G`` free. Returns ``[B, G, D]`` (before
    positions) and the next tail."""
    conv1, conv2 = stack.hf.conv1, stack.hf.conv2
    g = mel.shape[-1] // 2
    started = (length > 0)[:, None, None]
    full = torch.cat([mel_tail * started, mel], dim=-1)  # mel[2j0-2 .. 2j0+2G-1]
    pre = F.conv1d(full, conv1.weight, conv1.bias)  # first conv at 2j0-1 .. 2j0+2G-2
    last = F.conv1d(F.pad(full[..., -2:], (0, 1)), conv1.weight, conv1.bias)  # at 2j0+2G-1, zeros past it
    g1 = F.gelu(torch.cat([pre, last], dim=-1))
    g1 = torch.cat([g1[..., :1] * started, g1[..., 1:]], dim=-1)  # before the stream: the second conv's padding
    right = torch.arange(g - 1, device=mel.device) * 2 + 2  # each frame's right input to the second conv
    truncated = F.gelu(pre[..., right] - torch.einsum("oc,bcn->bon", conv1.weight[:, :, 2], full[..., right + 2]))
    delta = F.pad(truncated - g1[..., right], (0, 1))  # the last frame's is truncated already
    out = F.conv1d(g1, conv2.weight, conv2.bias, stride=2) + torch.einsum("oc,bcn->bon", conv2.weight[:, :, 2], delta)
    return F.gelu(out).transpose(1, 2), full[..., -2:]


class ContentEncoder(nn.Module):
    """Frame-causal Whisper encoder, its first ``layers`` layers, attention over a ring of ``window`` frames."""

    def __init__(self, stack: WhisperEncoderStack, layers: int, window: int = 1500) -> None:
        super().__init__()
        if not 1 <= layers <= len(stack.hf.layers):
            raise ValueError(f"layers must be 1-{len(stack.hf.layers)}, got {layers}")
        if not 1 <= window <= stack.capacity:
            raise ValueError(f"window must be 1-{stack.capacity} frames, got {window}")
        self.stack, self.layers, self.window = stack, layers, window
        self.dim = stack.d_model

    def _finish(self, x: Tensor) -> Tensor:
        """Whisper's final LayerNorm after the last layer; a plain (affine-free) one after an inner layer."""
        if self.layers == len(self.stack.hf.layers):
            return self.stack.hf.layer_norm(x)
        return F.layer_norm(x, (self.dim,))

    def _positions(self, frames: Tensor) -> Tensor:
        return self.stack.hf.embed_positions.weight[frames % self.stack.capacity]

    @torch.no_grad()
    def forward(self, mel: Tensor) -> Tensor:
        """Offline: causal Whisper features ``[B, 80, 2T]`` (``asr.whisper.features.causal_features``) ->
        ``[B, T, D]``; the parity reference of :class:`ContentStep`."""
        x = self.stack.stem(mel, chunk=1)
        t = x.shape[1]
        frames = torch.arange(t, device=mel.device)
        x = x + self._positions(frames)
        behind = frames[:, None] - frames[None, :]
        mask = additive_mask((behind >= 0) & (behind < self.window), x.dtype)
        for layer in self.stack.hf.layers[: self.layers]:
            keys, values = self.stack.project(layer, x)
            x = self.stack.attend_layer(layer, x, keys, values, mask)
        return self._finish(x)


class ContentStep(StepFunction):
    """``mel [80, 2G]`` (causal Whisper features, 2 per encoder frame; any ``G`` >= 1 up to the window) ->
    ``content [G, D]``.

    State: the last two mel frames (conv stem), each layer's keys and values in a ring of ``window`` slots
    (frame ``n`` in slot ``n mod window``) and the frames so far; the ring's rows are written in place."""

    name = "vc_content"

    def __init__(self, encoder: ContentEncoder) -> None:
        super().__init__()
        self.encoder = encoder

    @property
    def signature(self) -> StepSignature:
        enc = self.encoder
        n_mels = enc.stack.hf.conv1.in_channels
        return StepSignature(
            inputs=(TensorSpec("mel", (n_mels, None), time_axis=1),),
            outputs=(TensorSpec("content", (None, enc.dim), time_axis=0),),
            states=(StateSpec("mel_tail", (n_mels, 2)),
                    StateSpec("keys", (enc.layers, enc.window, enc.dim)),
                    StateSpec("values", (enc.layers, enc.window, enc.dim)),
                    StateSpec("length", (), torch.int64)),
            geometry=ChunkGeometry(hop=2, frames_out=1, left_context=2 * enc.window),
            extra={"frame_s": CONTENT_FRAME_S, "layers": enc.layers, "window": enc.window},
        )

    def example_inputs(self, batch: int) -> Tensors:
        """For export: three frames (the stem's inner and last frames both traced)."""
        return {"mel": torch.randn(batch, self.encoder.stack.hf.conv1.in_channels, 6)}

    def step(self, inputs: Tensors, state: Tensors) -> tuple[Tensors, Tensors]:
        enc = self.encoder
        mel, length = inputs["mel"], state["length"]
        g, w = mel.shape[-1] // 2, enc.window
        x, mel_tail = frame_causal_stem(enc.stack, mel, state["mel_tail"], length)
        frames = length[:, None] + torch.arange(g, device=mel.device)  # [B, G] absolute
        x = x + enc._positions(frames)
        slots = torch.arange(w, device=mel.device)
        held = length[:, None] - 1 - torch.remainder(length[:, None] - 1 - slots[None], w)  # frame in each slot
        past = (held[:, None, :] >= 0) & (held[:, None, :] > frames[:, :, None] - w)  # [B, G, W]
        new = torch.arange(g, device=mel.device)
        within = (new[None, :] <= new[:, None])[None].expand(x.shape[0], -1, -1)
        mask = additive_mask(torch.cat([past, within], dim=-1)[:, None], x.dtype)
        new_keys, new_values = [], []
        for i, layer in enumerate(enc.stack.hf.layers[: enc.layers]):
            k, v = enc.stack.project(layer, x)
            new_keys.append(k)
            new_values.append(v)
            keys = torch.cat([state["keys"][:, i].to(x.dtype), k], dim=1)
            values = torch.cat([state["values"][:, i].to(x.dtype), v], dim=1)
            x = enc.stack.attend_layer(layer, x, keys, values, mask)
        rows = torch.remainder(frames, w)
        return ({"content": enc._finish(x)},
                {"mel_tail": mel_tail, "keys": RowUpdate(rows, torch.stack(new_keys, 1), 1),
                 "values": RowUpdate(rows, torch.stack(new_values, 1), 1), "length": length + g})
