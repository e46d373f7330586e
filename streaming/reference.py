"""A model-agnostic reference step built from the shared blocks, for scheduler tests and benchmarks.

Each layer is a depthwise causal convolution, a grouped pointwise convolution and GELU, with a residual;
the state is the convolution caches. It accepts any chunk length, so streams may push chunks of any size.

Its kernels are batch-invariant on CPU: a stream's output does not depend on which other streams share
its batch, bit for bit. (A dense ``nn.Linear`` is not: the BLAS GEMM picks its blocking from the batch
size.) That lets scheduler tests demand bitwise equality with solo runs, so any difference can only come
from the scheduler mixing streams or state.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import CausalConv1d
from .contract import ChunkGeometry, StepFunction, StepSignature, Tensors, TensorSpec


class ReferenceStep(StepFunction):
    """``x [T, channels] -> y [T, channels]`` through ``layers`` causal conv blocks."""

    name = "reference"

    def __init__(
        self, channels: int = 128, layers: int = 4, kernel_size: int = 9, groups: int = 4, seed: int = 0
    ) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.channels = channels
        self.convs = nn.ModuleList(
            CausalConv1d(channels, channels, kernel_size, groups=channels) for _ in range(layers)
        )
        self.mixers = nn.ModuleList(nn.Conv1d(channels, channels, 1, groups=groups) for _ in range(layers))
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=generator) / p[0].numel() ** 0.5)

    @property
    def signature(self) -> StepSignature:
        return StepSignature(
            inputs=(TensorSpec("x", (None, self.channels), time_axis=0),),
            outputs=(TensorSpec("y", (None, self.channels), time_axis=0),),
            states=tuple(conv.state_spec(f"conv{i}") for i, conv in enumerate(self.convs)),
            geometry=ChunkGeometry(hop=1, frames_out=1, left_context=self.convs[0].context),
        )

    def step(self, inputs: Tensors, state: Tensors) -> tuple[Tensors, Tensors]:
        h = inputs["x"].transpose(1, 2).contiguous()
        next_state = {}
        for i, (conv, mix) in enumerate(zip(self.convs, self.mixers)):
            c, next_state[f"conv{i}"] = conv.stream(h, state[f"conv{i}"])
            h = h + F.gelu(mix(c))
        return {"y": h.transpose(1, 2)}, next_state

    def offline(self, x: torch.Tensor) -> torch.Tensor:
        """The whole signal ``[B, T, channels]`` at once (the parity reference)."""
        h = x.transpose(1, 2)
        for conv, mix in zip(self.convs, self.mixers):
            h = h + F.gelu(mix(conv(h)))
        return h.transpose(1, 2)
