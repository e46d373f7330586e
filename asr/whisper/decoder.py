"""Whisper's decoder with explicit state: self-attention K/V per token, cross-attention K/V per encoder frame.

Both caches are fixed-capacity buffers (448 tokens; 1500 frames, plus ``scratch`` rows). Their valid
lengths are inputs, kept by the caller: a step reads tokens ``< start`` and frames ``< frames``, writes the
K/V of its own tokens at ``start ..`` and of new frames at ``audio_at ..``, in place, in rows that hold
nothing valid yet, and attention reads the caches where they lie (no copy per step). Rewinding the last
tokens (the stability rule) is passing a smaller ``start``; beams are rows of one call that share the
cached prefix (only row 0's tokens are written). Cross-attention keys and values are a per-frame
projection of the encoder output, so appending a chunk's frames is exact. ``logits`` is the
teacher-forced full-sequence forward (training, and the reference the step is tested against).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from streaming.blocks.attention import additive_mask


@dataclass
class DecoderCache:
    self_keys: Tensor  # [B, layers, token capacity + scratch, D]
    self_values: Tensor
    cross_keys: Tensor  # [B, layers, frame capacity + scratch, D]
    cross_values: Tensor


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
        return x.unflatten(-1, (self.n_heads, self.head_dim)).transpose(1, 2)

    def _attend(self, attn: nn.Module, h: Tensor, keys: Tensor, values: Tensor, mask: Tensor | None) -> Tensor:
        b, t, _ = h.shape
        out = F.scaled_dot_product_attention(self._heads(attn.q_proj(h)), self._heads(keys), self._heads(values),
                                             attn_mask=mask)
        return attn.out_proj(out.transpose(1, 2).reshape(b, t, self.d_model))

    def _embed(self, tokens: Tensor, positions: Tensor) -> Tensor:
        return self.hf.embed_tokens(tokens) + self.hf.embed_positions.weight[positions]

    def output(self, hidden: Tensor) -> Tensor:
        """Hidden states ``[..., D]`` -> vocabulary logits (the tied embedding)."""
        return self.hf.layer_norm(hidden) @ self.hf.embed_tokens.weight.T

    def logits(self, tokens: Tensor, encoded: Tensor) -> Tensor:
        """Teacher forcing: ``tokens [B, S]`` over ``encoded [B, T, D]`` -> ``[B, S, vocab]``."""
        s = tokens.shape[1]
        x = self._embed(tokens, torch.arange(s, device=tokens.device)[None].expand_as(tokens))
        causal = additive_mask(torch.ones(s, s, dtype=torch.bool, device=tokens.device).tril(), x.dtype)
        for layer in self.hf.layers:
            h = layer.self_attn_layer_norm(x)
            x = x + self._attend(layer.self_attn, h, layer.self_attn.k_proj(h), layer.self_attn.v_proj(h), causal)
            cross = layer.encoder_attn
            x = x + self._attend(cross, layer.encoder_attn_layer_norm(x), cross.k_proj(encoded), cross.v_proj(encoded),
                                 None)
            x = x + layer.fc2(F.gelu(layer.fc1(layer.final_layer_norm(x))))
        return self.output(x)

    # ---- streaming ----------------------------------------------------------------------------------
    def initial_cache(self, batch: int, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu",
                      scratch: int = 0) -> DecoderCache:
        """Empty caches with ``scratch`` rows past each capacity (for rows written by padding or no audio)."""
        layers = len(self.hf.layers)

        def zeros(n: int) -> Tensor:
            return torch.zeros(batch, layers, n + scratch, self.d_model, dtype=dtype, device=device)

        return DecoderCache(zeros(self.token_capacity), zeros(self.token_capacity), zeros(self.frame_capacity),
                            zeros(self.frame_capacity))

    def project_audio(self, encoded: Tensor) -> tuple[Tensor, Tensor]:
        """Encoder frames ``[B, G, D]`` -> every layer's cross-attention keys and values ``[B, layers, G, D]``."""
        keys = torch.stack([layer.encoder_attn.k_proj(encoded) for layer in self.hf.layers], 1)
        values = torch.stack([layer.encoder_attn.v_proj(encoded) for layer in self.hf.layers], 1)
        return keys, values

    @staticmethod
    def write_rows(cache: Tensor, rows: Tensor, at: Tensor) -> Tensor:
        """Writes ``rows [B, layers, n, D]`` into ``cache [B, layers, capacity, D]`` at ``at [B] ..`` in place;
        returns the positions written ``[B, n]``."""
        positions = at[:, None] + torch.arange(rows.shape[2], device=rows.device)
        cache.scatter_(2, positions[:, None, :, None].expand(rows.shape), rows.to(cache.dtype))
        return positions

    def forward_tokens(self, tokens: Tensor, start: Tensor, frames: Tensor, cache: DecoderCache,
                       audio: tuple[Tensor, Tensor, Tensor] | None = None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """``tokens [B, R, N]`` at positions ``start [B] ..`` over the cached tokens ``< start`` and frames
        ``< frames [B]`` -> hidden states ``[B, R, N, D]`` and row 0's keys and values ``[B, layers, N, D]``,
        which are also written to the cache. ``audio``: a chunk's cross-attention ``(keys, values)
        [B, layers, G, D]`` and the frame ``at [B]`` they start from, written to the cache first.

        Rows are beams: each sees the shared cached prefix and its own tokens (causally). Under ONNX export
        (tracing) nothing is written: the new rows are attended beside the cache, and lengths stay tensors."""
        b, r, n = tokens.shape
        capacity, tracing = self.token_capacity, torch.jit.is_tracing()
        positions = start[:, None] + torch.arange(n, device=tokens.device)  # [B, N]
        if not tracing and int(positions[:, 0].max()) >= capacity:
            raise ValueError(f"Whisper's decoder holds {capacity} tokens")
        x = self._embed(tokens, positions.clamp(max=capacity - 1)[:, None, :]).flatten(1, 2)  # [B, R*N, D]
        cached, span = (start.max(), frames.max()) if tracing else (int(start.max()), int(frames.max()))
        prefix_mask = (torch.arange(cached, device=tokens.device)[None, :] < start[:, None])[:, None, None, :]
        own = torch.ones(n, n, dtype=torch.bool, device=tokens.device).tril()
        self_mask = torch.cat([prefix_mask.expand(b, 1, n, -1), own.expand(b, 1, n, n)], -1)  # [B, 1, N, cached + N]
        cross_keys, cross_values, cross_mask = self._cross_attended(cache, frames, span, audio)
        self_mask, cross_mask = additive_mask(self_mask, x.dtype), additive_mask(cross_mask, x.dtype)
        prefix_keys, prefix_values = cache.self_keys[:, :, :cached], cache.self_values[:, :, :cached]  # one slice
        written_keys, written_values = [], []
        for i, layer in enumerate(self.hf.layers):
            attn = layer.self_attn
            h = layer.self_attn_layer_norm(x)
            k, v = attn.k_proj(h).view(b, r, n, -1), attn.v_proj(h).view(b, r, n, -1)  # [B, R, N, D]
            if not tracing:
                self.write_rows(cache.self_keys[:, i : i + 1], k[:, :1], start)
                self.write_rows(cache.self_values[:, i : i + 1], v[:, :1], start)
            written_keys.append(k[:, 0])
            written_values.append(v[:, 0])
            x = x + self._attend_rows(attn, h, prefix_keys[:, i], prefix_values[:, i], k, v, self_mask)
            cross = layer.encoder_attn
            x = x + self._attend(cross, layer.encoder_attn_layer_norm(x), cross_keys(i), cross_values(i), cross_mask)
            x = x + layer.fc2(F.gelu(layer.fc1(layer.final_layer_norm(x))))
        return x.view(b, r, n, -1), (torch.stack(written_keys, 1), torch.stack(written_values, 1))

    def _cross_attended(self, cache: DecoderCache, frames: Tensor, span: Tensor | int,
                        audio: tuple[Tensor, Tensor, Tensor] | None):
        """Per layer, the cross-attention keys and values a call reads, and their mask ``[B, 1, 1, keys]``."""
        device = frames.device
        if not torch.jit.is_tracing():
            if audio is not None:
                self.write_rows(cache.cross_keys, audio[0], audio[2])
                self.write_rows(cache.cross_values, audio[1], audio[2])
            mask = (torch.arange(span, device=device)[None, :] < frames[:, None])[:, None, None, :]
            keys, values = cache.cross_keys[:, :, :span], cache.cross_values[:, :, :span]
            return (lambda i: keys[:, i]), (lambda i: values[:, i]), mask
        if audio is None:
            raise ValueError("export traces the decoder step with its audio rows")
        new_keys, new_values, at = audio  # rows at >= frames are not heard yet; cache rows from `at` on are replaced
        known = torch.arange(span, device=device)[None, :] < torch.minimum(frames, at)[:, None]
        fresh = (at[:, None] + torch.arange(new_keys.shape[2], device=device)) < frames[:, None]
        mask = torch.cat([known, fresh], 1)[:, None, None, :]
        keys = torch.cat([cache.cross_keys[:, :, :span], new_keys.to(cache.cross_keys.dtype)], 2)  # sliced once
        values = torch.cat([cache.cross_values[:, :, :span], new_values.to(cache.cross_values.dtype)], 2)
        return (lambda i: keys[:, i]), (lambda i: values[:, i]), mask

    def _attend_rows(self, attn: nn.Module, h: Tensor, prefix_keys: Tensor, prefix_values: Tensor, keys: Tensor,
                     values: Tensor, mask: Tensor) -> Tensor:
        """Self-attention of ``R`` rows of ``N`` tokens ``h [B, R*N, D]`` over the shared prefix and their own
        tokens (``keys``/``values [B, R, N, D]``)."""
        b, r, n, d = keys.shape
        q = self._heads(attn.q_proj(h).view(b, r, n, -1).flatten(0, 1))  # [B*R, H, N, hd]
        k = torch.cat([prefix_keys[:, None].expand(b, r, *prefix_keys.shape[1:]), keys], 2).flatten(0, 1)
        v = torch.cat([prefix_values[:, None].expand(b, r, *prefix_values.shape[1:]), values], 2).flatten(0, 1)
        out = F.scaled_dot_product_attention(q, self._heads(k), self._heads(v),
                                             attn_mask=mask[:, None].expand(b, r, *mask.shape[1:]).flatten(0, 1))
        return attn.out_proj(out.transpose(1, 2).reshape(b, r * n, d))
