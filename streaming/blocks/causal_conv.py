"""Causal 1-D convolution whose streaming state is the last ``(kernel - 1) * dilation`` input frames."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..contract import StateSpec


class CausalConv1d(nn.Module):
    """A stride-1 ``Conv1d`` on ``[B, C, T]`` that sees only the past (left zero padding offline).

    Streaming prepends the cached frames instead of zeros, so any chunking of the input gives the
    offline output; the cache starts as zeros, which is exactly the offline padding.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        dilation: int = 1,
        groups: int = 1,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, dilation=dilation, groups=groups, bias=bias)
        self.in_channels = in_channels
        self.context = (kernel_size - 1) * dilation

    def state_spec(self, name: str) -> StateSpec:
        return StateSpec(name, (self.in_channels, self.context))

    def forward(self, x: Tensor) -> Tensor:
        """Offline: the whole signal at once."""
        return self.conv(F.pad(x, (self.context, 0)))

    def stream(self, x: Tensor, cache: Tensor) -> tuple[Tensor, Tensor]:
        """One chunk ``[B, C, T]`` (any T >= 1) with ``cache [B, C, context]``; returns output and next cache."""
        full = torch.cat([cache, x], dim=-1)
        return self.conv(full), full[..., full.shape[-1] - self.context :]
