"""TensorRT engines from exported ONNX files, one optimisation profile over the batch axis.

Needs the ``tensorrt`` package (10.x) and an NVIDIA GPU; where it is missing, :func:`build_engine` raises
:class:`TensorRTUnavailable` saying so, and ``static_check`` still tells whether a file would parse.
Axes other than the batch that a step leaves free (token counts, frames of a head) get the range
``other_axes`` (min, opt, max); every state axis is static by construction.
"""

from __future__ import annotations

from pathlib import Path


class TensorRTUnavailable(RuntimeError):
    """The ``tensorrt`` package is not importable here."""


def tensorrt_module():
    try:
        import tensorrt
    except ImportError as error:
        raise TensorRTUnavailable(
            "building TensorRT engines needs the `tensorrt` Python package (10.x) and an NVIDIA GPU; it is not "
            "installed here. Install it where the engines will run (e.g. `pip install tensorrt` on an x86 CUDA "
            "host, JetPack's python3-libnvinfer on Jetson) and rerun `speech export --format tensorrt`, or use "
            "the ONNX files with onnxruntime's TensorRT execution provider") from error
    return tensorrt


def build_engine(onnx_path: str | Path, engine_path: str | Path, *, max_batch: int = 16, opt_batch: int = 4,
                 fp16: bool = True, other_axes: tuple[int, int, int] = (1, 8, 512), workspace_gib: float = 2.0) -> Path:
    """Parses ``onnx_path`` and writes a serialized engine whose profile spans batch 1..``max_batch``."""
    trt = tensorrt_module()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ValueError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        shape = list(tensor.shape)
        low, mid, high = ([], [], [])
        for axis, dim in enumerate(shape):
            if axis == 0:
                low.append(1), mid.append(opt_batch), high.append(max_batch)
            elif dim < 0:
                low.append(other_axes[0]), mid.append(other_axes[1]), high.append(other_axes[2])
            else:
                low.append(dim), mid.append(dim), high.append(dim)
        profile.set_shape(tensor.name, low, mid, high)
    config.add_optimization_profile(profile)
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path} (see its log above)")
    engine_path = Path(engine_path)
    engine_path.write_bytes(bytes(engine))
    return engine_path
