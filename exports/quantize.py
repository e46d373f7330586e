"""int8 files: onnxruntime's dynamic quantisation of the weights of an fp32 export (activations stay float,
quantised per call), keeping the file's metadata so the backend still runs it as the same step."""

from __future__ import annotations

from pathlib import Path

import onnx


def int8(fp32_path: str | Path, out_path: str | Path) -> Path:
    """Quantises the MatMul/Gemm weights of ``fp32_path`` to int8 (per channel) into ``out_path``."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out_path = Path(out_path)
    quantize_dynamic(str(fp32_path), str(out_path), weight_type=QuantType.QInt8, per_channel=True,
                     op_types_to_quantize=["MatMul", "Gemm"])
    source, model = onnx.load(str(fp32_path), load_external_data=False), onnx.load(str(out_path))
    del model.metadata_props[:]
    for prop in source.metadata_props:
        model.metadata_props.add(key=prop.key, value="int8" if prop.key == "speech.precision" else prop.value)
    onnx.save(model, str(out_path))
    return out_path
