"""ONNX / TensorRT export of every streaming step with its state as explicit inputs and outputs (issue 6)."""
