"""Chunk-limited multi-head self-attention with relative positions and a fixed-capacity K/V cache.

The masking follows NeMo's ``chunked_limited`` context: frame ``t`` belongs to chunk ``t // C`` and sees
its own chunk, the ``left_chunks`` chunks before it, and ``lookahead`` frames past its chunk's end. Scores
are Transformer-XL relative-position scores with the parameter names of NeMo's
``RelPositionMultiHeadAttention`` (``linear_q/k/v/out/pos``, ``pos_bias_u/v``), so its weights load as is.

Streaming keeps the projected keys and values of the last ``left_chunks * C`` frames in a buffer of fixed
capacity, filled from the right, with a per-stream valid length; unfilled positions are masked.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..contract import StateSpec

MASKED_SCORE = -10000.0


def additive_mask(allowed: Tensor, dtype: torch.dtype) -> Tensor:
    """A boolean attention mask (True: may attend) as the additive mask ``scaled_dot_product_attention`` takes,
    in the activations' ``dtype``: the same result in torch, but an fp16 step exports as fp16. Given a boolean
    mask, ONNX's attention makes fp32 constants, which promote every later tensor of an fp16 graph to fp32
    (and leave LayerNorms with mixed types that ONNX Runtime refuses). Build it once per call, not per layer."""
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed, float("-inf"))


def relative_sinusoids(distances: Tensor, d_model: int) -> Tensor:
    """Sinusoidal embeddings of relative distances: ``sin`` on even features, ``cos`` on odd ones."""
    div = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32, device=distances.device) * (-math.log(10000.0) / d_model))
    angles = distances.to(torch.float32)[:, None] * div[None, :]
    pe = torch.zeros(distances.shape[0], d_model, device=distances.device)
    pe[:, 0::2] = torch.sin(angles)
    pe[:, 1::2] = torch.cos(angles)
    return pe


class ChunkLimitedAttention(nn.Module):
    """Self-attention on ``[B, T, D]`` over chunks of ``chunk_size`` frames with bounded left context."""

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        chunk_size: int,
        left_chunks: int,
        *,
        lookahead: int = 0,
        bias: bool = True,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model {d_model} is not divisible by n_heads {n_heads}")
        if chunk_size < 1 or left_chunks < 0 or lookahead < 0:
            raise ValueError("chunk_size must be >= 1, left_chunks and lookahead >= 0")
        self.d_model, self.n_heads, self.d_k = d_model, n_heads, d_model // n_heads
        self.chunk_size, self.left_chunks, self.lookahead = chunk_size, left_chunks, lookahead
        self.capacity = left_chunks * chunk_size
        self.max_past = (left_chunks + 1) * chunk_size - 1
        self.max_future = chunk_size - 1 + lookahead
        self.linear_q = nn.Linear(d_model, d_model, bias=bias)
        self.linear_k = nn.Linear(d_model, d_model, bias=bias)
        self.linear_v = nn.Linear(d_model, d_model, bias=bias)
        self.linear_out = nn.Linear(d_model, d_model, bias=bias)
        self.linear_pos = nn.Linear(d_model, d_model, bias=False)
        self.pos_bias_u = nn.Parameter(torch.zeros(n_heads, self.d_k))
        self.pos_bias_v = nn.Parameter(torch.zeros(n_heads, self.d_k))
        self.dropout = nn.Dropout(dropout)
        self.register_buffer(
            "distances", torch.arange(self.max_past, -self.max_future - 1, -1), persistent=False
        )

    def state_specs(self, prefix: str) -> tuple[StateSpec, ...]:
        """K and V of the last ``capacity`` frames, and how many of them are filled."""
        return (
            StateSpec(f"{prefix}.k", (self.capacity, self.d_model)),
            StateSpec(f"{prefix}.v", (self.capacity, self.d_model)),
            StateSpec(f"{prefix}.len", (), torch.int64),
        )

    def visible(self, q_pos: Tensor, k_pos: Tensor) -> Tensor:
        """``[Tq, Tk]`` mask of the keys each query may attend to (positions share one chunk grid)."""
        q_chunk = torch.div(q_pos, self.chunk_size, rounding_mode="floor")[:, None]
        k_chunk = torch.div(k_pos, self.chunk_size, rounding_mode="floor")[None, :]
        return (k_chunk >= q_chunk - self.left_chunks) & (k_pos[None, :] < (q_chunk + 1) * self.chunk_size + self.lookahead)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Offline over the whole sequence; ``lengths [B]`` masks padded frames."""
        positions = torch.arange(x.shape[1], device=x.device)
        visible = self.visible(positions, positions)[None]
        if lengths is not None:
            visible = visible & (positions[None, :] < lengths[:, None])[:, None, :]
        return self._attend(
            self._heads(self.linear_q(x)), self._heads(self.linear_k(x)), self._heads(self.linear_v(x)),
            positions, positions, visible,
        )

    def stream(
        self, x: Tensor, k_cache: Tensor, v_cache: Tensor, cache_len: Tensor, lookahead_frames: int = 0
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """One step: ``x [B, n*C + lookahead_frames, D]`` (the last ``lookahead_frames`` are future context).

        Returns the output for the first ``n*C`` frames (fewer only for a stream's last, partial chunk) and
        the next ``k_cache``, ``v_cache``, ``cache_len``. ``lookahead_frames`` holds for the whole batch: a
        step function built on this block must not batch a stream's last chunk (no lookahead left) with
        other streams' regular chunks of the same length.
        """
        cap, n_out = self.capacity, x.shape[1] - lookahead_frames
        keys = torch.cat([k_cache, self.linear_k(x)], dim=1)
        values = torch.cat([v_cache, self.linear_v(x)], dim=1)
        k_pos = torch.arange(cap + x.shape[1], device=x.device)
        q_pos = k_pos[cap : cap + n_out]
        filled = k_pos[None, :] >= (cap - cache_len)[:, None]
        visible = self.visible(q_pos, k_pos)[None] & filled[:, None, :]
        out = self._attend(
            self._heads(self.linear_q(x[:, :n_out])), self._heads(keys), self._heads(values), q_pos, k_pos, visible
        )
        kept = slice(n_out, cap + n_out)
        return out, keys[:, kept], values[:, kept], torch.clamp(cache_len + n_out, max=cap)

    def _heads(self, x: Tensor) -> Tensor:
        return x.view(x.shape[0], x.shape[1], self.n_heads, self.d_k).transpose(1, 2)

    def _attend(self, q: Tensor, k: Tensor, v: Tensor, q_pos: Tensor, k_pos: Tensor, visible: Tensor) -> Tensor:
        """Relative-position scores ``((q+u)k + (q+v)p) / sqrt(d_k)``; masked keys get zero weight."""
        table = self.linear_pos(relative_sinusoids(self.distances, self.d_model).to(q.dtype))
        table = table.view(-1, self.n_heads, self.d_k).transpose(0, 1)  # [H, n_dist, d_k]
        content = torch.matmul(q + self.pos_bias_u[None, :, None, :], k.transpose(-1, -2))
        position_all = torch.matmul(q + self.pos_bias_v[None, :, None, :], table.transpose(-1, -2)[None])
        index = (self.max_past - (q_pos[:, None] - k_pos[None, :])).clamp(0, table.shape[1] - 1)
        position = position_all.gather(-1, index.expand(*position_all.shape[:2], *index.shape))
        scores = (content + position) / math.sqrt(self.d_k)
        hidden = ~visible[:, None]
        weights = torch.softmax(scores.masked_fill(hidden, MASKED_SCORE), dim=-1).masked_fill(hidden, 0.0)
        out = torch.matmul(self.dropout(weights), v)
        return self.linear_out(out.transpose(1, 2).reshape(q.shape[0], q.shape[2], self.d_model))
