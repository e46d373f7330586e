"""int8 files: ONNX Runtime's blockwise 8-bit quantisation of the weights of an fp32 export, keeping the
file's metadata so the backend still runs it as the same step.

Every MatMul with a constant weight becomes ``MatMulNBits`` (8 bits, symmetric, one scale per 32 weights
along the input axis); at accuracy level 4 ONNX Runtime quantises the activations per call to int8 in the
same 32-wide blocks and multiplies in integers. Why not ``quantize_dynamic`` (``MatMulInteger``): it
quantises a call's activations with one scale for the whole tensor, and Whisper's activations have outlier
channels, so it cost causal Whisper 8.3 WER points on the Allison prompts (21.2 -> 29.5); blocks of 32 keep
the outliers to their own block (README, "Export: ONNX, ONNX Runtime and TensorRT"). Gathers (token
embeddings) stay float: ONNX Runtime quantises those to 4 bits only.
"""

from __future__ import annotations

import logging
from pathlib import Path

import onnx

BITS, BLOCK, ACCURACY_LEVEL = 8, 32, 4
METHOD = f"MatMulNBits {BITS}-bit symmetric, block {BLOCK}, accuracy level {ACCURACY_LEVEL} (int8 activations per block)"
FILE_TAG = f"int8b{BLOCK}"  # names cached int8 files, so files quantised another way are never reused


def int8(fp32_path: str | Path, out_path: str | Path) -> Path:
    """Quantises the constant MatMul weights of ``fp32_path`` into ``out_path`` (see the module docstring)."""
    from onnxruntime.quantization.matmul_nbits_quantizer import (
        DefaultWeightOnlyQuantConfig,
        MatMulNBitsQuantizer,
    )

    out_path = Path(out_path)
    source = onnx.load(str(fp32_path))
    metadata = {prop.key: prop.value for prop in source.metadata_props}  # the quantiser rewrites ``source``
    settings = DefaultWeightOnlyQuantConfig(block_size=BLOCK, is_symmetric=True, accuracy_level=ACCURACY_LEVEL,
                                            bits=BITS, op_types_to_quantize=("MatMul",))
    quantizer = MatMulNBitsQuantizer(source, algo_config=settings)
    chatty = logging.getLogger(MatMulNBitsQuantizer.__module__)  # logs every node it skips at INFO
    level = chatty.level
    chatty.setLevel(logging.WARNING)
    try:
        quantizer.process()
    finally:
        chatty.setLevel(level)
    model = quantizer.model.model
    del model.metadata_props[:]
    for key, value in (metadata | {"speech.precision": "int8", "speech.quantization": METHOD}).items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(out_path))
    return out_path


def weight_matmuls(path: str | Path) -> dict[str, int]:
    """How many MatMuls with a constant weight a file computes in int8 (``MatMulNBits``) and in float: what
    the manifest reports for an int8 file, so a graph the quantiser skipped does not pass unnoticed."""
    graph = onnx.load(str(path), load_external_data=False).graph
    weights = {tensor.name for tensor in graph.initializer}
    return {"int8": sum(node.op_type == "MatMulNBits" for node in graph.node),
            "float": sum(node.op_type in ("MatMul", "Gemm") and node.input[1] in weights for node in graph.node)}
