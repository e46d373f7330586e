"""ONNX Runtime behind the step-function interface: a backend swap changes no caller (DESIGN.md section 3).

An exported step is one ONNX file whose inputs are the step's inputs plus ``state.<name>`` for each state,
and whose outputs are the step's outputs plus ``next.<name>``, or, for a state the step updates by rows,
``next.<name>.rows`` and ``next.<name>.positions`` (a :class:`~streaming.contract.RowUpdate`, axis in the
metadata). The file's metadata carries the step's name and signature, so :class:`OnnxStep` runs it as a
step function of the same contract; the scheduler, its slot pools and the host logic do not change.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from .contract import RowUpdate, StateSpec, StepFunction, StepSignature, Tensors
from .signature_io import signature_from_dict

META_STEP, META_SIGNATURE, META_ROW_UPDATES = "speech.step", "speech.signature", "speech.row_updates"
PREFERRED_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
_NUMPY = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int64)": np.int64,
          "tensor(int32)": np.int32, "tensor(bool)": np.bool_}


def state_input(name: str) -> str:
    return f"state.{name}"


def state_output(name: str) -> str:
    return f"next.{name}"


def row_outputs(name: str) -> tuple[str, str]:
    """The two outputs of a state updated by rows: the rows written and their positions ``[B, n]``."""
    return f"next.{name}.rows", f"next.{name}.positions"


def default_providers() -> list[str]:
    """The execution providers this onnxruntime has, best first (TensorRT, CUDA, CPU)."""
    import onnxruntime

    available = set(onnxruntime.get_available_providers())
    return [p for p in PREFERRED_PROVIDERS if p in available]


class OnnxStep(StepFunction):
    """An exported step file run by an onnxruntime session, with the signature the file carries."""

    def __init__(self, path: str | Path, providers: Sequence[str] | None = None, threads: int | None = None) -> None:
        super().__init__()
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # errors only: fp16 files log a line per MatMul it cannot pre-compute
        if threads:
            options.intra_op_num_threads = threads
        # Idle worker threads sleep instead of spinning: between two runs the host logic, the slot pool and
        # other lanes use the same cores (torch), and spinning threads slowed Whisper's steps 2-3x
        # (`speech bench export`).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.path = str(path)
        self.session = onnxruntime.InferenceSession(self.path, sess_options=options,
                                                    providers=list(providers or default_providers()))
        meta = self.session.get_modelmeta().custom_metadata_map
        if META_SIGNATURE not in meta:
            raise ValueError(f"{path} is not an exported step (no {META_SIGNATURE!r} in its metadata); "
                             "export with `speech export`")
        self.name = meta[META_STEP]
        self._signature = signature_from_dict(json.loads(meta[META_SIGNATURE]))
        self.row_axes: dict[str, int] = json.loads(meta.get(META_ROW_UPDATES, "{}"))
        self._input_types = {i.name: _NUMPY[i.type] for i in self.session.get_inputs()}
        self._output_names = [o.name for o in self.session.get_outputs()]

    @property
    def signature(self) -> StepSignature:
        return self._signature

    def _feed(self, name: str, value: torch.Tensor) -> np.ndarray:
        array = value.detach().cpu().numpy()
        return np.ascontiguousarray(array, dtype=self._input_types[name])

    def step(self, inputs: Tensors, state: Tensors) -> tuple[Tensors, Tensors]:
        feeds = {name: self._feed(name, value) for name, value in inputs.items()}
        feeds.update({state_input(name): self._feed(state_input(name), value) for name, value in state.items()})
        results = dict(zip(self._output_names, self.session.run(self._output_names, feeds)))
        outputs = {spec.name: torch.from_numpy(results[spec.name]) for spec in self._signature.outputs}
        next_state: dict[str, torch.Tensor | RowUpdate] = {}
        for spec in self._signature.states:
            if spec.name in self.row_axes:
                rows, positions = row_outputs(spec.name)
                next_state[spec.name] = RowUpdate(torch.from_numpy(results[positions]), torch.from_numpy(results[rows]),
                                                  self.row_axes[spec.name])
            else:
                next_state[spec.name] = torch.from_numpy(results[state_output(spec.name)])
        return outputs, next_state


class StepMismatch(ValueError):
    """An exported file does not hold the step the runtime asked for (other model, geometry or state layout)."""


class OnnxBackend:
    """Runs each step from its exported ONNX file; ``locate(step)`` says which file (exporting it if need be).

    ``precision`` is the files' (``fp16`` files keep fp16 states in the slot pools). Providers default to the
    best this onnxruntime has; ``threads`` caps each session's intra-op threads (ONNX Runtime's default: one
    per core).
    """

    device = torch.device("cpu")  # ONNX Runtime takes and returns host arrays, whichever provider runs

    def __init__(self, locate: Callable[[StepFunction], str | Path], *, precision: str = "fp32",
                 providers: Sequence[str] | None = None, threads: int | None = None) -> None:
        if precision not in ("fp32", "fp16", "int8"):
            raise ValueError(f"precision must be fp32, fp16 or int8, got {precision!r}")
        self.locate, self.precision = locate, precision
        self.providers = list(providers) if providers else default_providers()
        self.threads = threads if threads is not None else int(os.environ.get("SPEECH_ONNX_THREADS", "0")) or None
        self._prepared: dict[tuple, OnnxStep] = {}  # one session per step and weights, shared by every stream

    def __repr__(self) -> str:
        return f"OnnxBackend(precision={self.precision!r}, providers={self.providers})"

    def prepare(self, step: StepFunction) -> StepFunction:
        """The step's file as an :class:`OnnxStep`, checked against the step's name and state layout."""
        if isinstance(step, OnnxStep):
            return step
        key = (step.name, tuple((id(t), t._version) for t in step.parameters()))  # same weights: same session
        if key not in self._prepared:
            self._prepared[key] = self._open(step)
        return self._prepared[key]

    def _open(self, step: StepFunction) -> OnnxStep:
        onnx_step = OnnxStep(self.locate(step), self.providers, self.threads)
        want, got = step.signature, onnx_step.signature
        if onnx_step.name != step.name or [(s.name, s.shape) for s in want.states] != [(s.name, s.shape) for s in got.states]:
            raise StepMismatch(f"{onnx_step.path} holds step {onnx_step.name!r} with states "
                               f"{[(s.name, s.shape) for s in got.states]}; the runtime asked for {step.name!r} with "
                               f"{[(s.name, s.shape) for s in want.states]}: re-export the model")
        return onnx_step

    def state_dtype(self, spec: StateSpec) -> torch.dtype:
        if spec.dtype.is_floating_point:
            return torch.float16 if self.precision == "fp16" else torch.float32
        return spec.dtype

    def run(self, step: StepFunction, inputs: Tensors, state: Tensors) -> tuple[Tensors, Tensors]:
        with torch.inference_mode():
            return step.step(inputs, state)

    def synchronize(self) -> None:
        """Session runs are synchronous; nothing is queued."""
