"""Causal depthwise-striding 2-D convolution subsampling (NeMo's ``dw_striding`` with ``causal_downsampling``).

Every strided layer pads the time and frequency axes by ``(kernel - 1, stride - 1)`` and sees no future
frame, so encoder frame ``j`` depends only on feature frames up to ``factor * j``. Positions outside a
sequence's valid range are zeroed before every layer (NeMo 3's masked convolution), which turns a padded
batch, a zero pre-encode cache or a stream's first chunk into exactly the offline zero padding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class CausalConv2d(nn.Conv2d):
    """``Conv2d`` padded ``(kernel - 1)`` before and ``(stride - 1)`` after, on both time and frequency."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int, groups: int = 1) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, groups=groups)
        self.pads = (kernel_size - 1, stride - 1)

    def forward(self, x: Tensor) -> Tensor:
        left, right = self.pads
        return super().forward(F.pad(x, (left, right, left, right)))

    def out_length(self, length: Tensor) -> Tensor:
        return torch.div(length + sum(self.pads) - self.kernel_size[0], self.stride[0], rounding_mode="floor") + 1


class CausalSubsampling(nn.Module):
    """``[B, feat, N]`` features -> ``[B, N', d_model]`` frames, ``N' = calc_length(N)`` (8x for three layers)."""

    kernel, stride = 3, 2

    def __init__(self, feat_in: int, d_model: int, channels: int, sampling_num: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [CausalConv2d(1, channels, self.kernel, self.stride), nn.ReLU()]
        for _ in range(sampling_num - 1):
            layers += [
                CausalConv2d(channels, channels, self.kernel, self.stride, groups=channels),
                nn.Conv2d(channels, channels, 1),
                nn.ReLU(),
            ]
        self.conv = nn.Sequential(*layers)
        self.factor = self.stride**sampling_num
        freq = feat_in
        for _ in range(sampling_num):
            freq = (freq + self.kernel - 1 + self.stride - 1 - self.kernel) // self.stride + 1
        self.out = nn.Linear(channels * freq, d_model)

    @property
    def cache_frames(self) -> int:
        """Feature frames a streaming window repeats from the previous chunk (NeMo's pre-encode cache)."""
        return self.factor + 1

    @property
    def dropped_frames(self) -> int:
        """Leading output frames of a streaming window that the cache only primes (``drop_extra_pre_encoded``)."""
        return 1 + (self.cache_frames - 1) // self.factor

    def out_length(self, length: Tensor) -> Tensor:
        for layer in self.conv:
            if isinstance(layer, CausalConv2d):
                length = layer.out_length(length)
        return length

    def forward(self, features: Tensor, start: Tensor, end: Tensor) -> tuple[Tensor, Tensor]:
        """Valid input frames are ``start <= t < end`` per sequence; ``start`` must be a multiple of the factor.

        Returns the frames and the valid output length (counted from output position 0).
        """
        x = features.transpose(1, 2).unsqueeze(1)  # [B, 1, N, feat]
        for layer in self.conv:
            x = x * _time_mask(x.shape[2], start, end, x.dtype)[:, None, :, None]
            x = layer(x)
            if isinstance(layer, CausalConv2d):
                start, end = torch.div(start, self.stride, rounding_mode="floor"), layer.out_length(end)
        x = x * _time_mask(x.shape[2], start, end, x.dtype)[:, None, :, None]
        b, c, t, f = x.shape
        return self.out(x.transpose(1, 2).reshape(b, t, c * f)), end


def _time_mask(length: int, start: Tensor, end: Tensor, dtype: torch.dtype) -> Tensor:
    positions = torch.arange(length, device=start.device)[None, :]
    return ((positions >= start[:, None]) & (positions < end[:, None])).to(dtype)
