"""One FastConformer block: macaron feed-forwards, relative-position attention, causal convolution.

Parameter names are NeMo's ``ConformerLayer`` names, so a NeMo state dict loads without renaming. The
attention keeps the *projected* keys and values of its left context in the streaming state (NeMo keeps
the layer inputs and re-projects them every chunk); the state is twice as large and a chunk costs a few
frames of projections instead of the whole context's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

MASKED_SCORE = -10000.0


@dataclass
class AttentionMasks:
    """What every layer of one forward shares: visible keys ``[B, Tq, Tk]``, distance index, valid queries."""

    visible: Tensor
    distance_index: Tensor  # [Tq, Tk] rows of the position table
    valid: Tensor  # [B, Tq] frames that are real (not padding)
    sinusoids: Tensor  # [n_distances, d_model]


class FeedForward(nn.Module):
    def __init__(self, d_model: int, expansion: int, dropout: float) -> None:
        super().__init__()
        self.linear1 = nn.Linear(d_model, d_model * expansion)
        self.linear2 = nn.Linear(d_model * expansion, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear2(self.dropout(F.silu(self.linear1(x))))


class RelPositionAttention(nn.Module):
    """Transformer-XL relative-position attention (NeMo ``RelPositionMultiHeadAttention``, untied biases)."""

    def __init__(self, d_model: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.h, self.d_k = n_heads, d_model // n_heads
        self.linear_q = nn.Linear(d_model, d_model)
        self.linear_k = nn.Linear(d_model, d_model)
        self.linear_v = nn.Linear(d_model, d_model)
        self.linear_out = nn.Linear(d_model, d_model)
        self.linear_pos = nn.Linear(d_model, d_model, bias=False)
        self.pos_bias_u = nn.Parameter(torch.zeros(n_heads, self.d_k))
        self.pos_bias_v = nn.Parameter(torch.zeros(n_heads, self.d_k))
        self.dropout = dropout
        self._table: tuple[tuple, Tensor] | None = None

    def position_table(self, sinusoids: Tensor) -> Tensor:
        """``linear_pos`` of the distance sinusoids; a constant of the weights, so cached at inference."""
        if torch.is_grad_enabled() or self.training:
            return self.linear_pos(sinusoids)
        w = self.linear_pos.weight
        key = (w.data_ptr(), w._version, w.dtype, sinusoids.shape, sinusoids.dtype, sinusoids.device)
        if self._table is None or self._table[0] != key:
            self._table = (key, self.linear_pos(sinusoids))
        return self._table[1]

    def project_kv(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.linear_k(x), self.linear_v(x)

    def forward(self, x: Tensor, keys: Tensor, values: Tensor, masks: AttentionMasks) -> Tensor:
        """Queries from ``x [B, Tq, D]`` over projected ``keys``/``values [B, Tk, D]``."""
        b, tq, _ = x.shape
        q = self.linear_q(x).view(b, tq, self.h, self.d_k).transpose(1, 2)
        k = keys.view(b, keys.shape[1], self.h, self.d_k).transpose(1, 2)
        v = values.view(b, values.shape[1], self.h, self.d_k).transpose(1, 2)
        table = self.position_table(masks.sinusoids.to(x.dtype)).view(-1, self.h, self.d_k).transpose(0, 1)
        by_distance = torch.matmul(q + self.pos_bias_v[:, None, :], table.transpose(-1, -2)[None])
        index = masks.distance_index.expand(b, self.h, *masks.distance_index.shape)
        position = by_distance.gather(-1, index) / math.sqrt(self.d_k)
        hidden = ~masks.visible[:, None]
        bias = position.masked_fill(hidden, MASKED_SCORE)
        out = F.scaled_dot_product_attention(
            q + self.pos_bias_u[:, None, :], k, v, attn_mask=bias, dropout_p=self.dropout if self.training else 0.0
        )
        out = out.masked_fill(hidden.all(dim=-1, keepdim=True), 0.0)  # rows that see nothing (padding)
        return self.linear_out(out.transpose(1, 2).reshape(b, tq, self.h * self.d_k))


class ConvModule(nn.Module):
    """Pointwise GLU, causal depthwise conv (kernel K, state = last K-1 frames), norm, Swish, pointwise."""

    def __init__(self, d_model: int, kernel_size: int, norm_type: str) -> None:
        super().__init__()
        self.pointwise_conv1 = nn.Conv1d(d_model, 2 * d_model, 1)
        self.depthwise_conv = nn.Conv1d(d_model, d_model, kernel_size, groups=d_model)
        self.batch_norm = nn.LayerNorm(d_model) if norm_type == "layer_norm" else nn.BatchNorm1d(d_model)
        self.pointwise_conv2 = nn.Conv1d(d_model, d_model, 1)
        self.context = kernel_size - 1

    def forward(self, x: Tensor, valid: Tensor, cache: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """``x [B, T, D]``; ``cache [B, D, K-1]`` (None offline: zero padding). Returns output and next cache."""
        h = F.glu(self.pointwise_conv1(x.transpose(1, 2)), dim=1)
        h = h.masked_fill(~valid[:, None, :], 0.0)
        full = F.pad(h, (self.context, 0)) if cache is None else torch.cat([cache, h], dim=-1)
        next_cache = None if cache is None else full[..., full.shape[-1] - self.context :]
        h = self.depthwise_conv(full)
        if isinstance(self.batch_norm, nn.LayerNorm):
            h = self.batch_norm(h.transpose(1, 2)).transpose(1, 2)
        else:
            h = self.batch_norm(h)
        return self.pointwise_conv2(F.silu(h)).transpose(1, 2), next_cache


class ConformerLayer(nn.Module):
    def __init__(self, d_model: int, n_heads: int, expansion: int, kernel_size: int, norm_type: str,
                 dropout: float, dropout_att: float) -> None:
        super().__init__()
        self.norm_feed_forward1 = nn.LayerNorm(d_model)
        self.feed_forward1 = FeedForward(d_model, expansion, dropout)
        self.norm_self_att = nn.LayerNorm(d_model)
        self.self_attn = RelPositionAttention(d_model, n_heads, dropout_att)
        self.norm_conv = nn.LayerNorm(d_model)
        self.conv = ConvModule(d_model, kernel_size, norm_type)
        self.norm_feed_forward2 = nn.LayerNorm(d_model)
        self.feed_forward2 = FeedForward(d_model, expansion, dropout)
        self.norm_out = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self, x: Tensor, masks: AttentionMasks, kv_cache: tuple[Tensor, Tensor] | None = None,
        conv_cache: Tensor | None = None,
    ) -> tuple[Tensor, tuple[Tensor, Tensor] | None, Tensor | None]:
        """Offline when the caches are None; otherwise one chunk, returning the next K/V and conv caches."""
        x = x + 0.5 * self.dropout(self.feed_forward1(self.norm_feed_forward1(x)))
        h = self.norm_self_att(x)
        k, v = self.self_attn.project_kv(h)
        next_kv = None
        if kv_cache is not None:
            k, v = torch.cat([kv_cache[0], k], dim=1), torch.cat([kv_cache[1], v], dim=1)
            size = kv_cache[0].shape[1]
            next_kv = (k[:, k.shape[1] - size :], v[:, v.shape[1] - size :])
        x = x + self.dropout(self.self_attn(h, k, v, masks))
        h, next_conv = self.conv(self.norm_conv(x), masks.valid, conv_cache)
        x = x + self.dropout(h)
        x = x + 0.5 * self.dropout(self.feed_forward2(self.norm_feed_forward2(x)))
        return self.norm_out(x), next_kv, next_conv
