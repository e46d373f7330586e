"""A step's signature as plain JSON, so that an exported file carries it and a backend rebuilds it.

The ONNX exporter writes it into every file's metadata; the ONNX backend reads it back to run a file as a
step function of the same contract (DESIGN.md section 3).
"""

from __future__ import annotations

import torch

from .contract import ChunkGeometry, StateSpec, StepSignature, TensorSpec

_DTYPES = {str(d).removeprefix("torch."): d for d in (torch.float32, torch.float16, torch.bfloat16, torch.int64,
                                                     torch.int32, torch.bool)}


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def signature_to_dict(signature: StepSignature) -> dict:
    def tensor(spec: TensorSpec) -> dict:
        return {"name": spec.name, "shape": list(spec.shape), "dtype": dtype_name(spec.dtype),
                "time_axis": spec.time_axis}

    g = signature.geometry
    return {
        "inputs": [tensor(s) for s in signature.inputs],
        "outputs": [tensor(s) for s in signature.outputs],
        "states": [{"name": s.name, "shape": list(s.shape), "dtype": dtype_name(s.dtype), "init": s.init}
                   for s in signature.states],
        "geometry": {"hop": g.hop, "frames_out": g.frames_out, "lookahead": g.lookahead,
                     "left_context": g.left_context, "output_delay": g.output_delay},
        "extra": signature.extra,
    }


def signature_from_dict(data: dict) -> StepSignature:
    def tensor(d: dict) -> TensorSpec:
        return TensorSpec(d["name"], tuple(d["shape"]), _DTYPES[d["dtype"]], d["time_axis"])

    return StepSignature(
        inputs=tuple(tensor(d) for d in data["inputs"]),
        outputs=tuple(tensor(d) for d in data["outputs"]),
        states=tuple(StateSpec(d["name"], tuple(d["shape"]), _DTYPES[d["dtype"]], d["init"]) for d in data["states"]),
        geometry=ChunkGeometry(**data["geometry"]),
        extra=dict(data["extra"]),
    )
