"""Cache-aware FastConformer encoder: an offline forward and a streaming step with explicit state.

Streaming follows NeMo's ``cache_aware_stream_step``. Every step sees ``cache_frames`` feature frames of
the previous chunk (the pre-encode cache) plus ``hop = factor * (right + 1)`` new frames and emits
``right + 1`` encoder frames. NeMo's first chunk is shorter (``1 + factor * right`` frames, no cache);
here the host prepends ``factor - 1`` zero frames to a stream so every step has the same shape, and
the step zeroes the positions before the signal on its first chunk, which is the offline padding. The
result equals NeMo's stream step for every context and the offline forward for ``right >= 1``.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from streaming.blocks.attention import relative_sinusoids

from .config import Context, EncoderConfig
from .layers import AttentionMasks, ConformerLayer
from .subsampling import CausalSubsampling


@dataclass
class EncoderState:
    """Per-stream streaming state; batch axis 0 everywhere."""

    pre_cache: Tensor  # [B, feat, cache_frames] last (normalised) feature frames of the previous chunk
    keys: Tensor  # [B, n_layers, cache_size, d_model] projected keys of the left context
    values: Tensor  # [B, n_layers, cache_size, d_model]
    cache_len: Tensor  # [B] int64, filled positions of keys/values (from the right)
    conv: Tensor  # [B, n_layers, d_model, kernel - 1] depthwise-conv inputs of the last frames
    frames: Tensor  # [B] int64, encoder frames emitted so far (0: the next chunk is the first)


class FastConformerEncoder(nn.Module):
    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.pre_encode = CausalSubsampling(cfg.feat_in, cfg.d_model, cfg.subsampling_conv_channels, cfg.sampling_num)
        self.layers = nn.ModuleList(
            ConformerLayer(cfg.d_model, cfg.n_heads, cfg.ff_expansion_factor, cfg.conv_kernel_size,
                           cfg.conv_norm_type, cfg.dropout, cfg.dropout_att)
            for _ in range(cfg.n_layers)
        )
        self.pre_dropout = nn.Dropout(cfg.dropout_pre_encoder)
        max_right = max(right for _, right in cfg.att_context_size)
        self.max_past, self.max_future = cfg.cache_size + max_right, max_right
        distances = torch.arange(self.max_past, -self.max_future - 1, -1)
        self.register_buffer("sinusoids", relative_sinusoids(distances, cfg.d_model), persistent=False)
        self.xscale = math.sqrt(cfg.d_model) if cfg.xscaling else 1.0
        if cfg.global_cmvn:
            self.register_buffer("cmvn_mean", torch.zeros(cfg.feat_in))
            self.register_buffer("cmvn_std", torch.ones(cfg.feat_in))

    def normalise(self, features: Tensor) -> Tensor:
        """``[B, feat, N]`` log-mel -> the encoder's input (global CMVN when the config has it)."""
        if not self.cfg.global_cmvn:
            return features
        return (features - self.cmvn_mean[:, None]) / self.cmvn_std[:, None]

    def set_feature_statistics(self, mean: Tensor, std: Tensor) -> None:
        """Per-bin log-mel mean and standard deviation of the training data, for global CMVN."""
        self.cmvn_mean.copy_(mean)
        self.cmvn_std.copy_(std.clamp(min=1e-3))

    # ---- geometry -------------------------------------------------------------------------------
    @property
    def factor(self) -> int:
        return self.cfg.subsampling_factor

    def hop(self, context: Context) -> int:
        """New feature frames per streaming step."""
        return self.factor * (context[1] + 1)

    @property
    def leading_pad(self) -> int:
        """Zero feature frames the host puts before a stream so its first step has the regular shape."""
        return self.factor - 1

    def choose_context(self, context: Context | None) -> Context:
        contexts = self.cfg.att_context_size
        if context is None:
            if self.training and len(contexts) > 1:
                return random.choices(contexts, weights=self.cfg.att_context_probs)[0]
            return contexts[0]
        if tuple(context) not in contexts:
            raise ValueError(f"context {list(context)} is not one of the model's {[list(c) for c in contexts]}")
        return tuple(context)

    # ---- masks ----------------------------------------------------------------------------------
    def _masks(self, context: Context, n_keys: int, q_offset: int, key_valid: Tensor, q_valid: Tensor) -> AttentionMasks:
        """NeMo's ``chunked_limited`` visibility on one chunk grid that starts at key position 0."""
        left, right = context
        chunk = right + 1
        left_chunks = left // chunk
        k_pos = torch.arange(n_keys, device=key_valid.device)
        q_pos = k_pos[q_offset:]
        diff = torch.div(q_pos, chunk, rounding_mode="floor")[:, None] - torch.div(k_pos, chunk, rounding_mode="floor")[None, :]
        grid = (diff >= 0) & (diff <= left_chunks)
        visible = grid[None] & key_valid[:, None, :] & q_valid[:, :, None]
        index = (self.max_past - (q_pos[:, None] - k_pos[None, :])).clamp(0, self.sinusoids.shape[0] - 1)
        return AttentionMasks(visible, index, q_valid, self.sinusoids)

    # ---- offline --------------------------------------------------------------------------------
    def forward(self, features: Tensor, lengths: Tensor, context: Context | None = None) -> tuple[Tensor, Tensor]:
        """``features [B, feat, N]`` -> ``[B, T, d_model]`` and lengths; context None: the default (or sampled in training)."""
        context = self.choose_context(context)
        x, lengths = self.pre_encode(self.normalise(features), torch.zeros_like(lengths), lengths)
        x = self.pre_dropout(x * self.xscale)
        valid = torch.arange(x.shape[1], device=x.device)[None, :] < lengths[:, None]
        masks = self._masks(context, x.shape[1], 0, valid, valid)
        for layer in self.layers:
            x, _, _ = layer(x, masks)
        return x, lengths

    # ---- streaming ------------------------------------------------------------------------------
    def initial_state(self, batch: int, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> EncoderState:
        cfg = self.cfg
        f = {"dtype": dtype, "device": device}
        return EncoderState(
            pre_cache=torch.zeros(batch, cfg.feat_in, self.pre_encode.cache_frames, **f),
            keys=torch.zeros(batch, cfg.n_layers, cfg.cache_size, cfg.d_model, **f),
            values=torch.zeros(batch, cfg.n_layers, cfg.cache_size, cfg.d_model, **f),
            cache_len=torch.zeros(batch, dtype=torch.int64, device=device),
            conv=torch.zeros(batch, cfg.n_layers, cfg.d_model, cfg.conv_kernel_size - 1, **f),
            frames=torch.zeros(batch, dtype=torch.int64, device=device),
        )

    def stream(self, features: Tensor, valid: Tensor, state: EncoderState, context: Context) -> tuple[Tensor, Tensor, EncoderState]:
        """One step: ``features [B, feat, hop]`` of which the first ``valid [B]`` frames are real.

        Returns ``[B, right + 1, d_model]``, the number of real output frames per stream, and the next state.
        """
        cache_frames, drop = self.pre_encode.cache_frames, self.pre_encode.dropped_frames
        window = torch.cat([state.pre_cache, self.normalise(features)], dim=-1)
        first = state.frames == 0
        start = torch.where(first, cache_frames + self.leading_pad, 0)
        x, end = self.pre_encode(window, start, cache_frames + valid)
        x = x[:, drop:] * self.xscale
        out_len = (end - drop).clamp(min=0, max=x.shape[1])
        size = self.cfg.cache_size
        k_pos = torch.arange(size + x.shape[1], device=x.device)
        key_valid = (k_pos[None, :] >= (size - state.cache_len)[:, None]) & (k_pos[None, :] < (size + out_len)[:, None])
        q_valid = torch.arange(x.shape[1], device=x.device)[None, :] < out_len[:, None]
        masks = self._masks(context, size + x.shape[1], size, key_valid, q_valid)
        keys, values, convs = [], [], []
        for i, layer in enumerate(self.layers):
            x, (k, v), conv = layer(x, masks, (state.keys[:, i], state.values[:, i]), state.conv[:, i])
            keys.append(k)
            values.append(v)
            convs.append(conv)
        next_state = EncoderState(
            pre_cache=window[..., window.shape[-1] - cache_frames :],
            keys=torch.stack(keys, dim=1),
            values=torch.stack(values, dim=1),
            cache_len=(state.cache_len + x.shape[1]).clamp(max=size),
            conv=torch.stack(convs, dim=1),
            frames=state.frames + out_len,
        )
        return x, out_len, next_state

    def stream_features(self, features: Tensor, context: Context) -> Tensor:
        """One feature sequence ``[feat, N]`` streamed chunk by chunk as a session does; ``[T, d_model]``."""
        hop = self.hop(context)
        padded = torch.cat([features.new_zeros(features.shape[0], self.leading_pad), features], dim=1)
        state, out = self.initial_state(1, features.dtype, features.device), []
        for start in range(0, padded.shape[1], hop):
            chunk = padded[:, start : start + hop]
            encoded, length, state = self.stream(torch.nn.functional.pad(chunk, (0, hop - chunk.shape[1]))[None],
                                                 torch.tensor([chunk.shape[1]]), state, context)
            out.append(encoded[0, : int(length[0])])
        return torch.cat(out)
