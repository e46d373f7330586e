"""The step-function contract every streaming model follows (DESIGN.md section 3).

A step function is a pure ``nn.Module``: it maps a batch of input chunks and a batch of state tensors to
outputs and the next state, with batch axis 0 as the stream axis everywhere. What it needs from the past
lives in its declared state, which is what makes a step poolable, batchable across streams and exportable
to ONNX one to one.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

Tensors = dict[str, Tensor]


class InvalidChunk(ValueError):
    """A chunk does not match what the step accepts (names, shape, dtype or non-finite values)."""


@dataclass(frozen=True)
class TensorSpec:
    """An input or output of a step, per stream: ``None`` in ``shape`` marks an axis of any length >= 1.

    ``time_axis`` names the axis that walks along time; its length must be a multiple of the hop.
    """

    name: str
    shape: tuple[int | None, ...]
    dtype: torch.dtype = torch.float32
    time_axis: int | None = None

    def describe(self) -> str:
        dims = ", ".join("*" if d is None else str(d) for d in self.shape)
        return f"{self.name}: [{dims}] {str(self.dtype).removeprefix('torch.')}"


@dataclass(frozen=True)
class StateSpec:
    """One state tensor of a step, per stream: a static shape, a dtype and the value a new stream starts with.

    Floating-point states are stored in the backend's compute dtype; integer states keep their own dtype.
    """

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype = torch.float32
    init: float = 0.0

    def __post_init__(self) -> None:
        if any((not isinstance(d, int)) or d < 0 for d in self.shape):
            raise ValueError(f"state {self.name!r} needs a static shape of non-negative ints, got {self.shape}")

    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass(frozen=True)
class ChunkGeometry:
    """How a step walks along time, in the units of its input axis 1 (samples or frames).

    hop: new input frames consumed per step (chunk lengths are multiples of it);
    lookahead: future frames beyond the hop the step must see before it can run;
    left_context: past frames the state carries;
    frames_out: output frames per hop;
    output_delay: leading output frames of a stream that precede its signal and are dropped by the host.
    """

    hop: int
    frames_out: int
    lookahead: int = 0
    left_context: int = 0
    output_delay: int = 0

    def __post_init__(self) -> None:
        if self.hop < 1 or self.frames_out < 0 or min(self.lookahead, self.left_context, self.output_delay) < 0:
            raise ValueError(f"invalid chunk geometry {self}")


@dataclass(frozen=True)
class StepSignature:
    """Everything the runtime needs to know about a step besides its code."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    states: tuple[StateSpec, ...]
    geometry: ChunkGeometry
    extra: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class RowUpdate:
    """A next state given as the rows a step wrote, not the whole tensor: ``values`` go to ``positions``
    along axis ``axis`` of each stream's state (axes counted after the batch axis) and the rest is kept.

    For large caches of which a step changes a few rows (attention K/V): the slot pool writes them in place,
    so a step costs its new rows, not a copy of the cache. ``positions [B, n]``; ``values`` has the state's
    shape with ``n`` at ``axis``. Repeated positions must carry equal values.
    """

    positions: Tensor
    values: Tensor
    axis: int

    def apply(self, state: Tensor) -> None:
        """Writes the rows into ``state [B, ...]`` in place."""
        axis = self.axis + 1
        shape = [1] * self.values.ndim
        shape[0], shape[axis] = self.positions.shape
        index = self.positions.view(shape).expand(self.values.shape)
        state.scatter_(axis, index, self.values.to(state.dtype))


class StepFunction(nn.Module, ABC):
    """A pure streaming step: ``step(inputs, state) -> (outputs, next_state)``, batched on axis 0."""

    name: str = "step"

    @property
    @abstractmethod
    def signature(self) -> StepSignature:
        """The declared inputs, outputs, states and chunk geometry."""

    @abstractmethod
    def step(self, inputs: Tensors, state: Tensors) -> tuple[Tensors, Tensors]:
        """Run one chunk for a batch of streams; must not mutate ``state`` or any module attribute.

        A next state is a tensor (the whole new value) or a :class:`RowUpdate` (the rows written)."""

    def forward(self, inputs: Tensors, state: Tensors) -> tuple[Tensors, Tensors]:
        return self.step(inputs, state)

    def initial_state(self, batch: int = 1, device: torch.device | str = "cpu") -> Tensors:
        """A fresh state for ``batch`` streams (what a slot holds right after it is opened)."""
        return {
            s.name: torch.full((batch, *s.shape), s.init, dtype=s.dtype, device=device)
            for s in self.signature.states
        }


def validate_chunk(
    signature: StepSignature, inputs: Tensors, *, check_finite: bool = True, any_float: bool = False
) -> None:
    """Raise :class:`InvalidChunk` saying what is wrong and what is accepted; per-stream tensors, no batch axis.

    ``any_float`` accepts floating inputs of any precision (between lanes, where the backend casts them).
    """
    if not isinstance(inputs, dict) or len(inputs) != len(signature.inputs):
        _reject(signature, f"a chunk is a dict with inputs {[s.name for s in signature.inputs]}, got "
                f"{sorted(inputs) if isinstance(inputs, dict) else type(inputs).__name__}")
    hop = signature.geometry.hop
    for spec in signature.inputs:
        value = inputs.get(spec.name)
        if not isinstance(value, Tensor):
            _reject(signature, f"chunk has inputs {sorted(inputs)}, expected {sorted(s.name for s in signature.inputs)}"
                    if value is None else f"input {spec.name!r} is {type(value).__name__}, not a tensor")
        if value.dtype != spec.dtype and not (any_float and value.is_floating_point() and spec.dtype.is_floating_point):
            _reject(signature, f"input {spec.name!r} has dtype {value.dtype}")
        shape = value.shape
        if len(shape) != len(spec.shape) or any(
            (want is None and got < 1) or (want is not None and got != want) for got, want in zip(shape, spec.shape)
        ):
            _reject(signature, f"input {spec.name!r} has shape {list(shape)}")
        if spec.time_axis is not None and shape[spec.time_axis] % hop:
            _reject(signature, f"input {spec.name!r} has {shape[spec.time_axis]} frames, not a multiple of the hop {hop}")
        if check_finite and value.is_floating_point() and not _all_finite(value):
            raise InvalidChunk(f"input {spec.name!r} contains NaN or infinite values")


def _reject(signature: StepSignature, problem: str) -> None:
    accepted = "; ".join(s.describe() for s in signature.inputs)
    raise InvalidChunk(f"{problem}; accepted: {accepted}")


def _all_finite(value: Tensor) -> bool:
    """numpy for CPU tensors: torch would start an OpenMP team on the calling (event-loop) thread."""
    if value.device.type == "cpu" and value.dtype in (torch.float32, torch.float64, torch.float16):
        return bool(np.isfinite(value.detach().numpy()).all())
    return bool(torch.isfinite(value).all())
