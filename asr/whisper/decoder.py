"""Whisper's decoder with explicit state: self-attention K/V per token, cross-attention K/V per encoder frame.

Both caches are fixed-capacity buffers with a valid length (448 tokens; 1500 frames). Cross-attention
keys and values are a per-frame projection of the encoder output, so appending a chunk's frames is exact;
rewinding the last tokens (the stability rule) is lowering ``length``. ``logits`` is the teacher-forced
full-sequence forward (training, and the reference the step is tested against).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class DecoderState:
    self_keys: Tensor  # [B, layers, token capacity, D]
    self_values: Tensor
    length: Tensor  # [B] tokens in the self-attention cache
    cross_keys: Tensor  # [B, layers, frame capacity, D]
    cross_values: Tensor
    frames: Tensor  # [B] encoder frames in the cross-attention cache


class WhisperDecoderStack(nn.Module):
    """Runs a Hugging Face ``WhisperDecoder``'s weights (modules shared, so LoRA layers apply)."""

    def __init__(self, hf_decoder: nn.Module, frame_capacity: int) -> None:
        super().__init__()
        self.hf = hf_decoder
        first = hf_decoder.layers[0].self_attn
        self.head_dim = first.head_dim
        self.d_model = hf_decoder.embed_tokens.weight.shape[1]
        self.n_heads = self.d_model // self.head_dim
        self.token_capacity = hf_decoder.embed_positions.weight.shape[0]
        self.frame_capacity = frame_capacity

    def _heads(self, x: Tensor) -> Tensor:
        return x.view(x.shape[0], x.shape[1], self.n_heads, self.head_dim).transpose(1, 2)

    def _attend(self, attn: nn.Module, h: Tensor, keys: Tensor, values: Tensor, mask: Tensor | None) -> Tensor:
        b, t, _ = h.shape
        out = F.scaled_dot_product_attention(self._heads(attn.q_proj(h)), self._heads(keys), self._heads(values),
                                             attn_mask=mask)
        return attn.out_proj(out.transpose(1, 2).reshape(b, t, self.d_model))

    def _embed(self, tokens: Tensor, positions: Tensor) -> Tensor:
        if int(positions.max()) >= self.token_capacity:
            raise ValueError(f"Whisper's decoder holds {self.token_capacity} tokens")
        return self.hf.embed_tokens(tokens) + self.hf.embed_positions.weight[positions]

    def _output(self, x: Tensor) -> Tensor:
        return self.hf.layer_norm(x) @ self.hf.embed_tokens.weight.T

    def logits(self, tokens: Tensor, encoded: Tensor) -> Tensor:
        """Teacher forcing: ``tokens [B, S]`` over ``encoded [B, T, D]`` -> ``[B, S, vocab]``."""
        s = tokens.shape[1]
        x = self._embed(tokens, torch.arange(s, device=tokens.device)[None].expand_as(tokens))
        causal = torch.ones(s, s, dtype=torch.bool, device=tokens.device).tril()
        for layer in self.hf.layers:
            h = layer.self_attn_layer_norm(x)
            x = x + self._attend(layer.self_attn, h, layer.self_attn.k_proj(h), layer.self_attn.v_proj(h), causal)
            cross = layer.encoder_attn
            x = x + self._attend(cross, layer.encoder_attn_layer_norm(x), cross.k_proj(encoded), cross.v_proj(encoded),
                                 None)
            x = x + layer.fc2(F.gelu(layer.fc1(layer.final_layer_norm(x))))
        return self._output(x)

    # ---- streaming ----------------------------------------------------------------------------------
    def initial_state(self, batch: int, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"
                      ) -> DecoderState:
        layers = len(self.hf.layers)

        def zeros(n: int) -> Tensor:
            return torch.zeros(batch, layers, n, self.d_model, dtype=dtype, device=device)

        count = torch.zeros(batch, dtype=torch.int64, device=device)
        return DecoderState(zeros(self.token_capacity), zeros(self.token_capacity), count,
                            zeros(self.frame_capacity), zeros(self.frame_capacity), count.clone())

    def extend_audio(self, encoded: Tensor, state: DecoderState) -> DecoderState:
        """Appends a chunk's encoder frames ``[B, G, D]`` to every layer's cross-attention K/V."""
        b, g, _ = encoded.shape
        if int(state.frames.max()) + g > self.frame_capacity:
            raise ValueError(f"the cross-attention cache holds {self.frame_capacity} frames; reset the stream")
        index = (state.frames[:, None] + torch.arange(g, device=encoded.device))[:, :, None].expand(b, g, self.d_model)
        keys, values = state.cross_keys.clone(), state.cross_values.clone()
        for i, layer in enumerate(self.hf.layers):
            keys[:, i].scatter_(1, index, layer.encoder_attn.k_proj(encoded).to(keys.dtype))
            values[:, i].scatter_(1, index, layer.encoder_attn.v_proj(encoded).to(values.dtype))
        return replace(state, cross_keys=keys, cross_values=values, frames=state.frames + g)

    def rewind(self, state: DecoderState, length: Tensor) -> DecoderState:
        """Forgets the tokens at and after ``length [B]`` (their cached K/V are overwritten later)."""
        return replace(state, length=torch.minimum(state.length, length))

    def step(self, tokens: Tensor, state: DecoderState) -> tuple[Tensor, DecoderState]:
        """``tokens [B, n]`` at positions ``length ..`` -> logits ``[B, n, vocab]`` and the state with them cached."""
        b, n = tokens.shape
        positions = state.length[:, None] + torch.arange(n, device=tokens.device)
        x = self._embed(tokens, positions)
        span = int(state.length.max()) + n
        slots = torch.arange(span, device=tokens.device)
        self_mask = (slots[None, None, :] <= positions[:, :, None])[:, None]  # [B, 1, n, span]
        frames = int(state.frames.max())
        cross_mask = (torch.arange(frames, device=tokens.device)[None, :] < state.frames[:, None])[:, None, None]
        index = positions[:, :, None].expand(b, n, self.d_model)
        keys, values = state.self_keys.clone(), state.self_values.clone()
        for i, layer in enumerate(self.hf.layers):
            h = layer.self_attn_layer_norm(x)
            keys[:, i].scatter_(1, index, layer.self_attn.k_proj(h).to(keys.dtype))
            values[:, i].scatter_(1, index, layer.self_attn.v_proj(h).to(values.dtype))
            x = x + self._attend(layer.self_attn, h, keys[:, i, :span].to(x.dtype), values[:, i, :span].to(x.dtype),
                                 self_mask)
            x = x + self._attend(layer.encoder_attn, layer.encoder_attn_layer_norm(x),
                                 state.cross_keys[:, i, :frames].to(x.dtype),
                                 state.cross_values[:, i, :frames].to(x.dtype), cross_mask)
            x = x + layer.fc2(F.gelu(layer.fc1(layer.final_layer_norm(x))))
        return self._output(x), replace(state, self_keys=keys, self_values=values, length=state.length + n)
