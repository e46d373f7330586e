"""Transposed-convolution upsampling with state: what a streaming vocoder needs."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..contract import StateSpec


class StreamingConvTranspose1d(nn.Module):
    """``ConvTranspose1d`` (kernel K >= stride s, padding p) streamed by overlap-add.

    Input frame t writes output samples ``[t*s, t*s + K)``. After a chunk ending at frame t1 every sample
    before ``t1*s`` is complete, so a step emits exactly ``T*s`` samples and carries the ``K - s`` partial
    sums of the overlap (without bias) as its state. The offline output is the stream with its first ``p``
    samples dropped (``output_delay``) and cut ``p`` samples before the flushed end.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int, padding: int = 0) -> None:
        super().__init__()
        if kernel_size < stride:
            raise ValueError(f"kernel_size {kernel_size} must be >= stride {stride} for overlap-add streaming")
        self.conv = nn.ConvTranspose1d(in_channels, out_channels, kernel_size, stride=stride, padding=padding)
        self.out_channels = out_channels
        self.stride = stride
        self.overlap = kernel_size - stride
        self.output_delay = padding

    def state_spec(self, name: str) -> StateSpec:
        return StateSpec(name, (self.out_channels, self.overlap))

    def forward(self, x: Tensor) -> Tensor:
        """Offline: ``[B, C_in, T] -> [B, C_out, (T - 1) * s + K - 2p]``."""
        return self.conv(x)

    def stream(self, x: Tensor, tail: Tensor) -> tuple[Tensor, Tensor]:
        """One chunk ``[B, C_in, T]``; returns ``T * s`` finished samples and the next overlap tail."""
        full = F.conv_transpose1d(x, self.conv.weight, None, stride=self.stride)
        full = torch.cat([full[..., : self.overlap] + tail, full[..., self.overlap :]], dim=-1)
        emit = x.shape[-1] * self.stride
        out, next_tail = full[..., :emit], full[..., emit:]
        return self._bias(out), next_tail

    def flush(self, tail: Tensor) -> Tensor:
        """The last ``K - s`` samples once the input has ended."""
        return self._bias(tail)

    def _bias(self, x: Tensor) -> Tensor:
        return x if self.conv.bias is None else x + self.conv.bias[:, None]
