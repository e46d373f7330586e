"""Backends run a step function on a device; a backend swap changes no caller (DESIGN.md section 3)."""

from __future__ import annotations

import copy
import ctypes
import ctypes.util
from functools import cache
from typing import Protocol

import torch

from .contract import StateSpec, StepFunction, Tensors

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "fp64": torch.float64}


class Backend(Protocol):
    device: torch.device

    def prepare(self, step: StepFunction) -> StepFunction: ...

    def state_dtype(self, spec: StateSpec) -> torch.dtype: ...

    def run(self, step: StepFunction, inputs: Tensors, state: Tensors) -> tuple[Tensors, Tensors]: ...


@cache
def keep_freed_memory_in_heap() -> bool:
    """Stop glibc from handing large freed blocks back to the OS.

    A step's activations are large, short-lived blocks. By default glibc serves them with ``mmap`` and
    returns them on ``free``, so every step page-faults its working memory back in; under the scheduler,
    where outputs live a little longer, steps ran 20-30% slower for it (``speech bench runtime``). Returns
    whether the setting took (it does nothing off glibc).
    """
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
    return all(
        mallopt(option, value)
        for option, value in ((m_mmap_threshold, 32 << 20), (m_trim_threshold, 1 << 30), (m_top_pad, 64 << 20))
    )


class TorchBackend:
    """Eager PyTorch on CPU or CUDA under ``inference_mode``, in fp32, bf16 or fp16.

    Floating inputs and states are cast to the compute dtype; integer tensors keep theirs. Outputs stay on
    the device in the compute dtype, so chained lanes on one device never copy.
    """

    def __init__(self, device: str | torch.device = "cpu", dtype: str = "fp32") -> None:
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("CUDA was asked for but torch sees no CUDA device")
        if self.device.type not in ("cpu", "cuda"):
            raise ValueError(f"TorchBackend runs on cpu or cuda, got {self.device}")
        self.dtype_name = dtype
        self.dtype = DTYPES[dtype]
        if self.device.type == "cpu":
            keep_freed_memory_in_heap()

    def __repr__(self) -> str:
        return f"TorchBackend(device={str(self.device)!r}, dtype={self.dtype_name!r})"

    def prepare(self, step: StepFunction) -> StepFunction:
        """The step with its weights on this device and dtype, in eval mode.

        A step already there, with no module in training mode, is shared as it is (steps are read-only;
        a wrapper's own flag does not count, only what runs); any other is copied, so that the caller's
        module, perhaps also serving another lane or backend, is never changed.
        """
        tensors = [*step.parameters(), *step.buffers()]
        if all(t.device == self.device and (t.dtype == self.dtype or not t.is_floating_point()) for t in tensors):
            running = [m for m in step.modules() if m is not step]
            return step if not any(m.training for m in running) else copy.deepcopy(step).eval()
        return copy.deepcopy(step).to(device=self.device, dtype=self.dtype).eval()

    def state_dtype(self, spec: StateSpec) -> torch.dtype:
        return self.dtype if spec.dtype.is_floating_point else spec.dtype

    def _cast(self, tensors: Tensors) -> Tensors:
        return {
            name: t.to(self.device, self.dtype if t.is_floating_point() else t.dtype, non_blocking=True)
            for name, t in tensors.items()
        }

    def run(self, step: StepFunction, inputs: Tensors, state: Tensors) -> tuple[Tensors, Tensors]:
        with torch.inference_mode():
            return step.step(self._cast(inputs), self._cast(state))

    def synchronize(self) -> None:
        """Wait for queued device work (for timing)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def packaged_onnx_session(package: str, resource: str, needed_by: str, pip_extra: str):
    """``onnx_cpu_session`` of an ONNX model shipped inside a PyPI package (``resource``: its path there);
    a missing package is a ``ModuleNotFoundError`` that says which package ``needed_by`` needs and how to get it."""
    import importlib.resources

    try:
        path = importlib.resources.files(package).joinpath(*resource.split("/"))
    except ModuleNotFoundError as error:
        raise ModuleNotFoundError(f"{needed_by} needs the PyPI package {package.replace('_', '-')} "
                                  f"(pip install -e .[{pip_extra}])") from error
    return onnx_cpu_session(str(path))


def onnx_cpu_session(path: str, threads: int = 1):
    """An onnxruntime CPU session for a small model that many streams share (one intra-op thread each)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.inter_op_num_threads = options.intra_op_num_threads = threads
    return onnxruntime.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])
