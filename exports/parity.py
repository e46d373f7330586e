"""Side-by-side runs of two backends: every step call's outputs and next state, compared call by call.

Each backend chains its own state through the whole stream (the ONNX run never sees a torch state), so a
drift that grows along the stream shows; the host logic drives both the same way as long as they decide the
same (same tokens), which the caller checks on the decoded text.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import torch

from streaming.backend import Backend
from streaming.contract import RowUpdate, StateSpec, StepFunction, Tensors


@dataclass
class Call:
    step: str
    tensors: dict[str, np.ndarray]  # outputs, and next states as ``next.<name>`` (rows: ``.rows``/``.positions``)


def _host(value: torch.Tensor) -> np.ndarray:
    return value.detach().to("cpu", torch.float32 if value.is_floating_point() else value.dtype).numpy().copy()


class RecordingBackend:
    """Runs steps on ``inner`` and keeps a copy of what every call returned."""

    def __init__(self, inner: Backend) -> None:
        self.inner, self.device, self.calls = inner, inner.device, []

    def prepare(self, step: StepFunction) -> StepFunction:
        return self.inner.prepare(step)

    def state_dtype(self, spec: StateSpec) -> torch.dtype:
        return self.inner.state_dtype(spec)

    def run(self, step: StepFunction, inputs: Tensors, state: Tensors) -> tuple[Tensors, Tensors]:
        outputs, next_state = self.inner.run(step, inputs, state)
        tensors = {name: _host(value) for name, value in outputs.items()}
        for name, value in next_state.items():
            if isinstance(value, RowUpdate):
                tensors[f"next.{name}.rows"], tensors[f"next.{name}.positions"] = _host(value.values), _host(value.positions)
            else:
                tensors[f"next.{name}"] = _host(value)
        self.calls.append(Call(step.name, tensors))
        return outputs, next_state


@dataclass
class ParityReport:
    calls: dict[str, int] = field(default_factory=dict)  # per step
    max_abs: dict[tuple[str, str], float] = field(default_factory=dict)  # (step, tensor) -> largest difference
    diverged_at: int | None = None  # the first call where the two runs stopped doing the same thing
    divergence: str = ""

    @property
    def worst(self) -> float:
        return max(self.max_abs.values(), default=0.0)

    def rows(self) -> list[dict]:
        return [{"step": step, "tensor": tensor, "calls": self.calls[step], "max_abs_diff": diff}
                for (step, tensor), diff in sorted(self.max_abs.items())]


def compare(reference: list[Call], candidate: list[Call]) -> ParityReport:
    """Largest absolute difference of every tensor of every step between two recorded runs."""
    report = ParityReport()
    counts: dict[str, int] = defaultdict(int)
    for index, (ref, cand) in enumerate(zip(reference, candidate)):
        if ref.step != cand.step or ref.tensors.keys() != cand.tensors.keys() or any(
                ref.tensors[k].shape != cand.tensors[k].shape for k in ref.tensors):
            report.diverged_at, report.divergence = index, f"call {index}: {ref.step} vs {cand.step}"
            break
        counts[ref.step] += 1
        for name, value in ref.tensors.items():
            other = cand.tensors[name]
            diff = float(np.abs(value.astype(np.float64) - other.astype(np.float64)).max()) if value.size else 0.0
            key = (ref.step, name)
            report.max_abs[key] = max(report.max_abs.get(key, 0.0), diff)
    if report.diverged_at is None and len(reference) != len(candidate):
        report.diverged_at = min(len(reference), len(candidate))
        report.divergence = f"{len(reference)} calls vs {len(candidate)}"
    report.calls = dict(counts)
    return report
