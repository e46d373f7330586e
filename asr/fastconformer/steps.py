"""The encoder step in the runtime's contract (streaming.contract): named inputs, outputs and states.

One step function per lookahead (the hop differs), so a lane of the chunk scheduler batches the streams
that chose the same lookahead; the slot pool holds each stream's state. ONNX export (issue 6) exports
exactly this module, states in and states out.
"""

from __future__ import annotations

import torch

from streaming.contract import ChunkGeometry, StateSpec, StepFunction, StepSignature, Tensors, TensorSpec

from .config import Context
from .encoder import EncoderState, FastConformerEncoder


class EncoderStep(StepFunction):
    def __init__(self, encoder: FastConformerEncoder, context: Context) -> None:
        super().__init__()
        self.encoder, self.context = encoder, encoder.choose_context(context)
        self.name = f"fastconformer_encoder_{context[1]}"

    @property
    def signature(self) -> StepSignature:
        cfg, enc = self.encoder.cfg, self.encoder
        hop = enc.hop(self.context)
        return StepSignature(
            inputs=(TensorSpec("features", (cfg.feat_in, hop), time_axis=1),
                    TensorSpec("valid", (), torch.int64)),
            outputs=(TensorSpec("encoded", (self.context[1] + 1, cfg.d_model), time_axis=0),
                     TensorSpec("length", (), torch.int64)),
            states=(
                StateSpec("pre_cache", (cfg.feat_in, enc.pre_encode.cache_frames)),
                StateSpec("keys", (cfg.n_layers, cfg.cache_size, cfg.d_model)),
                StateSpec("values", (cfg.n_layers, cfg.cache_size, cfg.d_model)),
                StateSpec("cache_len", (), torch.int64),
                StateSpec("conv", (cfg.n_layers, cfg.d_model, cfg.conv_kernel_size - 1)),
                StateSpec("frames", (), torch.int64),
            ),
            geometry=ChunkGeometry(hop=hop, frames_out=self.context[1] + 1, left_context=cfg.cache_size,
                                   output_delay=0),
            extra={"leading_pad_frames": enc.leading_pad, "lookahead_ms": cfg.lookahead_ms(self.context)},
        )

    def step(self, inputs: Tensors, state: Tensors) -> tuple[Tensors, Tensors]:
        encoded, length, next_state = self.encoder.stream(
            inputs["features"], inputs["valid"], EncoderState(**state), self.context)
        return {"encoded": encoded, "length": length}, dict(vars(next_state))
