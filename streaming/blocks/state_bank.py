"""A bank of states indexed by solver step.

A flow-matching decoder integrates an ODE over several solver steps per chunk. Each solver step evaluates
the network on a different signal (x at time t_k), so each needs its own conv and attention history: one
cache shared across solver steps would mix the histories of different signals. The bank stores one copy
of every inner state per solver step, as one state tensor with a solver axis after the stream axis.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..contract import StateSpec, Tensors


class StateBank:
    """``steps`` copies of a set of states: per-stream shape ``[steps, *inner_shape]``."""

    def __init__(self, inner: Sequence[StateSpec], steps: int) -> None:
        if steps < 1:
            raise ValueError(f"a state bank needs at least one solver step, got {steps}")
        self.inner = tuple(inner)
        self.steps = steps

    @property
    def specs(self) -> tuple[StateSpec, ...]:
        return tuple(StateSpec(s.name, (self.steps, *s.shape), s.dtype, s.init) for s in self.inner)

    def select(self, bank: Tensors, step: int) -> Tensors:
        """The inner states of solver step ``step`` for every stream in the batch."""
        return {s.name: bank[s.name][:, step] for s in self.inner}

    def stack(self, per_step: Sequence[Tensors]) -> Tensors:
        """Rebuild a bank from the next inner states of every solver step, in solver order."""
        if len(per_step) != self.steps:
            raise ValueError(f"expected states for {self.steps} solver steps, got {len(per_step)}")
        return {s.name: torch.stack([states[s.name] for states in per_step], dim=1) for s in self.inner}
