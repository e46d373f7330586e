"""Causal Whisper's two step functions in the runtime's contract (streaming.contract).

``WhisperAudioStep``: a chunk of causal features -> the decoder's cross-attention keys and values of the
chunk's encoder frames (the encoder with its K/V cache, then every decoder layer's cross projection).
``WhisperDecoderStep``: tokens -> logits, over the decoder's self- and cross-attention K/V caches. Both
caches' valid lengths are inputs the host keeps (``position``; ``start``, ``frames``), so a new segment or
a rewind is just smaller numbers, and both write only new rows (:class:`~streaming.contract.RowUpdate`),
so the slot pool never copies a 30 s cache per token. A lane of the chunk scheduler per step batches the
streams; ONNX export (issue 6) exports exactly these modules.
"""

from __future__ import annotations

import torch

from streaming.contract import (
    ChunkGeometry,
    RowUpdate,
    StateSpec,
    StepFunction,
    StepSignature,
    Tensors,
    TensorSpec,
)

from .decoder import DecoderCache
from .encoder import EncoderState
from .model import CausalWhisper

TOKEN_BUCKET = 8  # token counts are padded to a multiple of this, so streams at nearby lengths share a batch


class WhisperAudioStep(StepFunction):
    def __init__(self, model: CausalWhisper, chunk_frames: int) -> None:
        super().__init__()
        self.model, self.chunk = model, chunk_frames
        self.name = f"whisper_audio_{20 * chunk_frames}ms"

    @property
    def signature(self) -> StepSignature:
        enc, dec = self.model.encoder, self.model.decoder
        n_mels, layers = enc.hf.conv1.in_channels, len(dec.hf.layers)
        return StepSignature(
            inputs=(TensorSpec("mel", (n_mels, 2 * self.chunk), time_axis=1), TensorSpec("position", (), torch.int64)),
            outputs=(TensorSpec("audio_keys", (layers, self.chunk, dec.d_model)),
                     TensorSpec("audio_values", (layers, self.chunk, dec.d_model))),
            states=(StateSpec("mel_tail", (n_mels, 2)),
                    StateSpec("keys", (len(enc.hf.layers), enc.capacity, enc.d_model)),
                    StateSpec("values", (len(enc.hf.layers), enc.capacity, enc.d_model))),
            geometry=ChunkGeometry(hop=2 * self.chunk, frames_out=self.chunk, left_context=2 * enc.capacity),
            extra={"chunk_ms": 20 * self.chunk, "frame_s": 0.02},
        )

    def example_inputs(self, batch: int) -> Tensors:
        """For export: streams at different positions."""
        return {"mel": torch.randn(batch, self.model.encoder.hf.conv1.in_channels, 2 * self.chunk),
                "position": torch.arange(batch) * self.chunk}

    def step(self, inputs: Tensors, state: Tensors) -> tuple[Tensors, Tensors]:
        position = inputs["position"]
        encoded, nxt, (keys, values) = self.model.encoder.stream(
            inputs["mel"], EncoderState(state["mel_tail"], state["keys"], state["values"], position))
        audio_keys, audio_values = self.model.decoder.project_audio(encoded)
        rows = position[:, None] + torch.arange(self.chunk, device=position.device)
        return ({"audio_keys": audio_keys, "audio_values": audio_values},
                {"mel_tail": nxt.mel_tail, "keys": RowUpdate(rows, keys, 1), "values": RowUpdate(rows, values, 1)})


class WhisperDecoderStep(StepFunction):
    """``tokens [R, N]`` (R rows: beams sharing the cached prefix; row 0 is cached) at ``start``, of which
    ``count`` are real (the rest padding) -> logits ``[R, min(N, logit_positions), vocab]`` at the last
    positions before ``count``. A chunk's cross-attention rows come with the first call after it
    (``audio_at`` = frames before it); other calls write them to the scratch rows (``audio_at`` = capacity)."""

    def __init__(self, model: CausalWhisper, chunk_frames: int, logit_positions: int) -> None:
        super().__init__()
        self.model, self.chunk, self.positions = model, chunk_frames, logit_positions
        self.name = f"whisper_decoder_{20 * chunk_frames}ms"

    @property
    def signature(self) -> StepSignature:
        dec = self.model.decoder
        layers, d = len(dec.hf.layers), dec.d_model
        vocab = dec.hf.embed_tokens.weight.shape[0]
        scalar = (TensorSpec("start", (), torch.int64), TensorSpec("count", (), torch.int64),
                  TensorSpec("audio_at", (), torch.int64), TensorSpec("frames", (), torch.int64))
        return StepSignature(
            inputs=(TensorSpec("tokens", (None, None), torch.int64), *scalar,
                    TensorSpec("audio_keys", (layers, self.chunk, d)), TensorSpec("audio_values", (layers, self.chunk, d))),
            outputs=(TensorSpec("logits", (None, None, vocab)),),
            states=(StateSpec("self_keys", (layers, dec.token_capacity + TOKEN_BUCKET, d)),
                    StateSpec("self_values", (layers, dec.token_capacity + TOKEN_BUCKET, d)),
                    StateSpec("cross_keys", (layers, dec.frame_capacity + self.chunk, d)),
                    StateSpec("cross_values", (layers, dec.frame_capacity + self.chunk, d))),
            geometry=ChunkGeometry(hop=1, frames_out=1),
            extra={"token_capacity": dec.token_capacity, "frame_capacity": dec.frame_capacity,
                   "token_bucket": TOKEN_BUCKET},
        )

    def example_inputs(self, batch: int) -> Tensors:
        """For export: two beam rows of a token bucket, streams at different lengths, one with new audio."""
        dec, g = self.model.decoder, self.chunk
        layers, d = len(dec.hf.layers), dec.d_model
        steps = torch.arange(batch)
        return {"tokens": torch.randint(0, 50000, (batch, 2, TOKEN_BUCKET)), "start": 4 * steps,
                "count": TOKEN_BUCKET - steps, "audio_at": torch.where(steps % 2 == 0, g * steps, dec.frame_capacity),
                "frames": g * (steps + 1), "audio_keys": torch.randn(batch, layers, g, d),
                "audio_values": torch.randn(batch, layers, g, d)}

    def step(self, inputs: Tensors, state: Tensors) -> tuple[Tensors, Tensors]:
        dec = self.model.decoder
        cache = DecoderCache(state["self_keys"], state["self_values"], state["cross_keys"], state["cross_values"])
        audio_at = inputs["audio_at"]
        audio_rows = audio_at[:, None] + torch.arange(self.chunk, device=audio_at.device)
        tokens, start, count = inputs["tokens"], inputs["start"], inputs["count"]
        hidden, (keys, values) = dec.forward_tokens(tokens, start, inputs["frames"], cache,
                                                    (inputs["audio_keys"], inputs["audio_values"], audio_at))
        n = tokens.shape[-1]
        last = torch.arange(n, device=tokens.device)[-self.positions :]  # the last min(N, positions) (traceable)
        at = (count[:, None] - n + last).clamp(min=0)  # [B, M]
        picked = hidden.gather(2, at[:, None, :, None].expand(*hidden.shape[:2], -1, hidden.shape[-1]))
        token_rows = start[:, None] + torch.arange(n, device=tokens.device)
        return ({"logits": dec.output(picked)},
                {"self_keys": RowUpdate(token_rows, keys, 1), "self_values": RowUpdate(token_rows, values, 1),
                 "cross_keys": RowUpdate(audio_rows, inputs["audio_keys"], 1),
                 "cross_values": RowUpdate(audio_rows, inputs["audio_values"], 1)})
