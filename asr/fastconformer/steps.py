"""FastConformer's step functions in the runtime's contract (streaming.contract): named inputs, outputs, states.

The encoder step exists once per lookahead (the hop differs), so a lane of the chunk scheduler batches the
streams that chose the same lookahead; the slot pool holds each stream's state. The heads are steps too
(CTC log-probabilities; the RNNT prediction network on its LSTM state; the joint of one encoder frame and
one prediction), so host-side decoding runs on any backend, and ONNX export exports exactly these modules.
"""

from __future__ import annotations

import torch

from streaming.backend import Backend
from streaming.contract import ChunkGeometry, StateSpec, StepFunction, StepSignature, Tensors, TensorSpec

from .config import Context
from .encoder import EncoderState, FastConformerEncoder
from .heads import CTCHead, Transducer
from .model import FastConformer


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
            extra={"leading_pad_frames": enc.leading_pad, "lookahead_ms": cfg.lookahead_ms(self.context),
                   "att_context_size": list(self.context)},
        )

    def step(self, inputs: Tensors, state: Tensors) -> tuple[Tensors, Tensors]:
        encoded, length, next_state = self.encoder.stream(
            inputs["features"], inputs["valid"], EncoderState(**state), self.context)
        return {"encoded": encoded, "length": length}, dict(vars(next_state))


class CTCStep(StepFunction):
    """Encoder frames -> CTC log-probabilities (blank last); stateless, any number of frames."""

    name = "fastconformer_ctc"

    def __init__(self, head: CTCHead) -> None:
        super().__init__()
        self.head = head

    @property
    def signature(self) -> StepSignature:
        d, classes = self.head.proj.in_features, self.head.proj.out_features
        return StepSignature(inputs=(TensorSpec("encoded", (None, d), time_axis=0),),
                             outputs=(TensorSpec("log_probs", (None, classes), time_axis=0),),
                             states=(), geometry=ChunkGeometry(hop=1, frames_out=1))

    def step(self, inputs: Tensors, state: Tensors) -> tuple[Tensors, Tensors]:
        return {"log_probs": self.head(inputs["encoded"])}, {}


class PredictionStep(StepFunction):
    """One label into the RNNT prediction network: ``token`` (blank = start) -> its output and the next LSTM state."""

    name = "fastconformer_prediction"

    def __init__(self, transducer: Transducer) -> None:
        super().__init__()
        self.transducer = transducer

    @property
    def signature(self) -> StepSignature:
        cfg = self.transducer.cfg
        shape = (cfg.pred_rnn_layers, cfg.pred_hidden)
        return StepSignature(inputs=(TensorSpec("token", (), torch.int64),),
                             outputs=(TensorSpec("predicted", (cfg.pred_hidden,)),),
                             states=(StateSpec("h", shape), StateSpec("c", shape)),
                             geometry=ChunkGeometry(hop=1, frames_out=1), extra={"blank": cfg.blank})

    def step(self, inputs: Tensors, state: Tensors) -> tuple[Tensors, Tensors]:
        predicted, h, c = self.transducer.predict_step(inputs["token"], state["h"], state["c"])
        return {"predicted": predicted}, {"h": h, "c": c}


class JointStep(StepFunction):
    """The RNNT joint of one encoder frame and one prediction output -> logits over the labels and blank."""

    name = "fastconformer_joint"

    def __init__(self, transducer: Transducer) -> None:
        super().__init__()
        self.transducer = transducer

    @property
    def signature(self) -> StepSignature:
        t = self.transducer
        return StepSignature(inputs=(TensorSpec("encoded", (t.joint_enc.in_features,)),
                                     TensorSpec("predicted", (t.joint_pred.in_features,))),
                             outputs=(TensorSpec("logits", (t.joint_out.out_features,)),),
                             states=(), geometry=ChunkGeometry(hop=1, frames_out=1))

    def step(self, inputs: Tensors, state: Tensors) -> tuple[Tensors, Tensors]:
        t = self.transducer
        return {"logits": t.joint(t.joint_enc(inputs["encoded"]), t.joint_pred(inputs["predicted"]))}, {}


def fastconformer_steps(model: FastConformer, contexts: list[Context] | None = None) -> list[StepFunction]:
    """Every step of the model: the encoder at each context (all of the model's by default), then its heads."""
    steps: list[StepFunction] = [EncoderStep(model.encoder, c) for c in (contexts or model.cfg.encoder.att_context_size)]
    if model.ctc is not None:
        steps.append(CTCStep(model.ctc))
    if model.transducer is not None:
        steps += [PredictionStep(model.transducer), JointStep(model.transducer)]
    return steps


class HeadSteps:
    """The steps of one decoder's heads (``rnnt`` or ``ctc``) prepared on one backend, called by host-side
    decoding (``decoding.py``)."""

    def __init__(self, model: FastConformer, backend: Backend, decoder: str) -> None:
        self.backend = backend
        if decoder == "ctc":
            self._ctc = backend.prepare(CTCStep(model.ctc))
        else:
            self._predict = backend.prepare(PredictionStep(model.transducer))
            self._joint = backend.prepare(JointStep(model.transducer))

    def ctc(self, encoded: torch.Tensor) -> torch.Tensor:
        return self.backend.run(self._ctc, {"encoded": encoded}, {})[0]["log_probs"]

    def predict(self, token: torch.Tensor, h: torch.Tensor, c: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out, state = self.backend.run(self._predict, {"token": token}, {"h": h, "c": c})
        return out["predicted"], state["h"], state["c"]

    def joint(self, encoded: torch.Tensor, predicted: torch.Tensor) -> torch.Tensor:
        return self.backend.run(self._joint, {"encoded": encoded, "predicted": predicted}, {})[0]["logits"]
