"""Step functions replayed as CUDA graphs: a chunk's hundreds of small kernels launched as one.

At one stream a step's GPU time is launch overhead, not arithmetic (the TTS flow step: four ODE evaluations
of a transformer decoder, a 16-frame chunk each; eager PyTorch spent ~20 ms launching what the H100 runs in
a few). A step is pure and its shapes are fixed per chunk size, which is what graph capture needs: each
input/state shape is captured the second time it comes (after warm-up runs on a side stream; a shape seen
once runs eagerly) and replayed after copying the chunk into the graph's static tensors. Outputs are cloned
out, so a caller may keep them past the next call. Each graph keeps a private memory pool: the steady chunk
shape is one graph per step, and the short last chunks of streams add one per length that recurs (a
vocoder step: at most its chunk length). Capture is process-wide in CUDA, so one lock serialises every
capture and replay in the process; everything runs under ``inference_mode``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import torch
from torch import Tensor

from .backend import TorchBackend
from .contract import StepFunction, StepSignature, Tensors

WARMUP_RUNS = 2  # eager runs before capture: lazy initialisation (cuBLAS handles, autotuning) stays out of it


@dataclass
class _Captured:
    graph: torch.cuda.CUDAGraph
    inputs: Tensors
    state: Tensors
    outputs: Tensors
    next_state: Tensors


def _shape_key(inputs: Tensors, state: Tensors) -> tuple:
    return tuple((name, tuple(t.shape), t.dtype) for group in (inputs, state) for name, t in sorted(group.items()))


class GraphedStep(StepFunction):
    """``step`` as CUDA graph replays, one graph per input and state shape that came more than once."""

    _lock = threading.Lock()  # one for the process: a capture must see no other thread's CUDA work

    def __init__(self, step: StepFunction) -> None:
        super().__init__()
        self.inner, self.name = step, step.name
        self._graphs: dict[tuple, _Captured] = {}
        self._seen: set[tuple] = set()

    @property
    def signature(self) -> StepSignature:
        return self.inner.signature

    def initial_state(self, batch: int = 1, device: torch.device | str = "cpu") -> Tensors:
        return self.inner.initial_state(batch, device)

    def step(self, inputs: Tensors, state: Tensors) -> tuple[Tensors, Tensors]:
        with self._lock, torch.inference_mode():
            key = _shape_key(inputs, state)
            if key not in self._graphs and key not in self._seen:
                self._seen.add(key)
                return self.inner.step(inputs, state)
            captured = self._graphs.get(key) or self._capture(key, inputs, state)
            for group, values in ((captured.inputs, inputs), (captured.state, state)):
                for name, static in group.items():
                    static.copy_(values[name])
            captured.graph.replay()
            return ({k: v.clone() for k, v in captured.outputs.items()},
                    {k: v.clone() for k, v in captured.next_state.items()})

    def _capture(self, key: tuple, inputs: Tensors, state: Tensors) -> _Captured:
        static_inputs = {k: v.clone() for k, v in inputs.items()}
        static_state = {k: v.clone() for k, v in state.items()}
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(WARMUP_RUNS):
                self.inner.step(static_inputs, static_state)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            outputs, next_state = self.inner.step(static_inputs, static_state)
        if not all(isinstance(v, Tensor) for v in next_state.values()):
            raise TypeError(f"step {self.name!r} returns row updates; CUDA graphs replay whole-state steps only")
        captured = _Captured(graph, static_inputs, static_state, outputs, next_state)
        self._graphs[key] = captured
        return captured


class CudaGraphBackend(TorchBackend):
    """:class:`TorchBackend` on a CUDA device, each prepared step replayed as CUDA graphs. Steps with the same
    parameters and signature (every stream's flow step of one model and settings) share one set of graphs:
    a step's buffers are functions of its configuration (the flow step's noise table, made per instance),
    so they do not tell steps apart."""

    def __init__(self, device: str | torch.device = "cuda", dtype: str = "fp32") -> None:
        super().__init__(device, dtype)
        if self.device.type != "cuda":
            raise ValueError(f"CUDA graphs need a CUDA device, got {self.device}")
        self._prepared: dict[tuple, tuple[StepFunction, GraphedStep]] = {}  # the source held: its ids stay its own

    def __repr__(self) -> str:
        return f"CudaGraphBackend(device={str(self.device)!r}, dtype={self.dtype_name!r})"

    def prepare(self, step: StepFunction) -> StepFunction:
        """The step's :class:`GraphedStep`, shared with every earlier step of the same parameters and signature."""
        if isinstance(step, GraphedStep):
            return step
        key = (type(step).__name__, repr(step.signature), tuple((id(t), t._version) for t in step.parameters()))
        if key not in self._prepared:  # the eager step (perhaps a copy on this device) made once per key
            self._prepared[key] = (step, GraphedStep(super().prepare(step)))
        return self._prepared[key][1]

    def run(self, step: StepFunction, inputs: Tensors, state: Tensors) -> tuple[Tensors, Tensors]:
        with torch.inference_mode():
            return step.step(self._cast(inputs), self._cast(state))
