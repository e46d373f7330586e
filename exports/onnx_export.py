"""torch -> ONNX for one step function, exactly the module the runtime runs: inputs and states in, outputs and
next states out, batch axis 0 dynamic, every state shape static, the signature in the file's metadata.

Naming and metadata are the ONNX backend's (``streaming.onnx_backend``), which runs the files unchanged.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import json
import warnings
from pathlib import Path

import onnx
import torch
from torch import Tensor, nn

from streaming.contract import RowUpdate, StepFunction, Tensors
from streaming.onnx_backend import (
    META_ROW_UPDATES,
    META_SIGNATURE,
    META_STEP,
    row_outputs,
    state_input,
    state_output,
)
from streaming.signature_io import signature_to_dict

DEFAULT_OPSET = 17
EXAMPLE_BATCH = 2  # not 1: the tracer must not mistake the batch axis for a broadcast one


def fingerprint(step: StepFunction) -> str:
    """A hash of what decides a step's file: its name, signature, weights and the source of the modules it
    runs (so a file exported from other weights or older code is noticed)."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(step.name.encode())
    for source in sorted({inspect.getsourcefile(type(m)) or "" for m in step.modules()}):
        digest.update(Path(source).read_bytes() if source else b"")
    digest.update(json.dumps(signature_to_dict(step.signature), sort_keys=True, default=str).encode())
    for name, tensor in sorted([*step.named_parameters(), *step.named_buffers()], key=lambda item: item[0]):
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu", torch.float32 if tensor.is_floating_point() else tensor.dtype)
                      .contiguous().numpy().tobytes())
    return digest.hexdigest()


def example_inputs(step: StepFunction, batch: int = EXAMPLE_BATCH) -> Tensors:
    """Inputs to trace with: the step's own ``example_inputs`` when it has one (values that take every
    branch a real chunk takes), else zeros, with free axes of length 2."""
    own = getattr(step, "example_inputs", None)
    if own is not None:
        return own(batch)
    return {s.name: torch.zeros((batch, *[2 if d is None else d for d in s.shape]), dtype=s.dtype)
            for s in step.signature.inputs}


class _Flat(nn.Module):
    """The step with positional tensors in and a flat tuple out, the form the ONNX exporter traces."""

    def __init__(self, step: StepFunction) -> None:
        super().__init__()
        self.inner = step
        sig = step.signature
        self.input_names = [s.name for s in sig.inputs]
        self.state_names = [s.name for s in sig.states]
        self.output_names = [s.name for s in sig.outputs]

    def forward(self, *tensors: Tensor) -> tuple[Tensor, ...]:
        n = len(self.input_names)
        outputs, next_state = self.inner.step(dict(zip(self.input_names, tensors[:n])),
                                              dict(zip(self.state_names, tensors[n:])))
        flat = [outputs[name] for name in self.output_names]
        for name in self.state_names:
            value = next_state[name]
            flat += [value.values, value.positions] if isinstance(value, RowUpdate) else [value]
        return tuple(flat)


def _row_axes(step: StepFunction, inputs: Tensors, state: Tensors) -> dict[str, int]:
    with torch.inference_mode():
        _, next_state = step.step({k: v.clone() for k, v in inputs.items()}, {k: v.clone() for k, v in state.items()})
    return {name: value.axis for name, value in next_state.items() if isinstance(value, RowUpdate)}


def export_step(step: StepFunction, path: str | Path, *, precision: str = "fp32", opset: int = DEFAULT_OPSET,
                metadata: dict[str, str] | None = None) -> Path:
    """Writes ``step`` to ``path`` (fp32 or fp16 weights and states; int8 is ``quantize.int8`` of an fp32
    file) with its signature, fingerprint and ``metadata`` (model-level facts) inside."""
    if precision not in ("fp32", "fp16"):
        raise ValueError(f"export_step writes fp32 or fp16, got {precision!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    dtype = torch.float16 if precision == "fp16" else torch.float32
    traced = copy.deepcopy(step).to(dtype).eval() if precision == "fp16" else step.eval()
    sig = step.signature
    inputs = {k: v.to(dtype) if v.is_floating_point() else v for k, v in example_inputs(step).items()}
    state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in step.initial_state(EXAMPLE_BATCH).items()}
    row_axes = _row_axes(traced, inputs, state)
    flat = _Flat(traced).eval()
    input_names = flat.input_names + [state_input(n) for n in flat.state_names]
    output_names = list(flat.output_names)
    for name in flat.state_names:
        output_names += list(row_outputs(name)) if name in row_axes else [state_output(name)]
    dynamic: dict[str, dict[int, str]] = {name: {0: "batch"} for name in input_names + output_names}
    for spec in (*sig.inputs, *sig.outputs):
        dynamic[spec.name].update({axis + 1: f"{spec.name}_{axis}" for axis, d in enumerate(spec.shape) if d is None})
    for name, axis in row_axes.items():
        dynamic[row_outputs(name)[0]][axis + 1] = f"{name}_rows"
        dynamic[row_outputs(name)[1]][1] = f"{name}_rows"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation and tracer notes; parity tests are the check
        torch.onnx.export(flat, tuple(inputs.values()) + tuple(state.values()), str(path), dynamo=False,
                          opset_version=opset, input_names=input_names, output_names=output_names,
                          dynamic_axes=dynamic, do_constant_folding=True)
    model = onnx.load(str(path))
    _declare_static_shapes(model, sig)
    facts = {META_STEP: step.name, META_SIGNATURE: json.dumps(signature_to_dict(sig), default=str),
             META_ROW_UPDATES: json.dumps(row_axes), "speech.fingerprint": fingerprint(step),
             "speech.precision": precision, **(metadata or {})}
    del model.metadata_props[:]
    for key, value in facts.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))
    return path


def _declare_static_shapes(model: onnx.ModelProto, signature) -> None:
    """Writes the per-stream shapes the signature guarantees onto the graph's outputs (the tracer leaves the
    axes of sliced or concatenated states symbolic); strict shape inference then checks them."""
    shapes = {state_output(s.name): s.shape for s in signature.states}
    shapes.update({s.name: s.shape for s in signature.outputs})
    for output in model.graph.output:
        shape = shapes.get(output.name)
        if shape is None:
            continue
        dims = output.type.tensor_type.shape.dim
        for dim, size in zip(list(dims)[1:], shape):
            if size is not None:
                dim.Clear()
                dim.dim_value = size


def read_metadata(path: str | Path) -> dict[str, str]:
    """The metadata of an exported file (without loading its weights into memory twice)."""
    model = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}
