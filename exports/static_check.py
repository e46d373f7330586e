"""The checks an exported file must pass anywhere, TensorRT installed or not: the ONNX checker, shape
inference, static per-stream state shapes (only the batch axis free), and operators TensorRT 10 parses."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import onnx

from streaming.onnx_backend import META_SIGNATURE, state_input, state_output

from .tensorrt_ops import TENSORRT_OPS


@dataclass
class StaticReport:
    path: str
    problems: list[str] = field(default_factory=list)
    non_tensorrt_ops: list[str] = field(default_factory=list)
    ops: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def tensorrt_ready(self) -> bool:
        return self.ok and not self.non_tensorrt_ops


def _dims(value_info: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in
            value_info.type.tensor_type.shape.dim]


def check_file(path: str | Path) -> StaticReport:
    """Everything wrong with one exported step file (an empty ``problems`` list: it passes)."""
    report = StaticReport(str(path))
    try:
        onnx.checker.check_model(str(path), full_check=True)  # full_check runs strict shape inference too
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as error:
        report.problems.append(f"onnx checker: {str(error).splitlines()[0]}")
    try:
        model = onnx.shape_inference.infer_shapes(onnx.load(str(path)), strict_mode=True)
    except onnx.shape_inference.InferenceError as error:
        report.problems.append(f"shape inference: {str(error).splitlines()[0]}")
        model = onnx.load(str(path))
    meta = {p.key: p.value for p in model.metadata_props}
    if META_SIGNATURE not in meta:
        report.problems.append("no step signature in the metadata (not written by `speech export`)")
        return report
    signature = json.loads(meta[META_SIGNATURE])
    io = {v.name: v for v in (*model.graph.input, *model.graph.output)}
    for state in signature["states"]:
        for name in (state_input(state["name"]), state_output(state["name"])):
            if name not in io:
                continue  # a state updated by rows has no whole next value
            dims = _dims(io[name])
            if dims[1:] != state["shape"] or not isinstance(dims[0], str):
                report.problems.append(f"{name}: shape {dims}, expected [batch, {', '.join(map(str, state['shape']))}]")
    ops = {node.op_type for node in model.graph.node}
    report.ops = len(ops)
    report.non_tensorrt_ops = sorted(ops - TENSORRT_OPS)
    return report
