"""The shape of a cache-aware FastConformer: encoder, heads and front end, in NeMo's vocabulary.

Field names follow NeMo's ``ConformerEncoder`` / ``RNNTDecoder`` / ``RNNTJoint`` config keys so an imported
``model_config.yaml`` maps onto them one to one and a reader of NeMo's docs recognises every knob.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from streaming.blocks import LogMelConfig

Context = tuple[int, int]  # (left, right) attention context in encoder frames, as NeMo's att_context_size


@dataclass(frozen=True)
class EncoderConfig:
    feat_in: int = 80
    n_layers: int = 17
    d_model: int = 512
    n_heads: int = 8
    ff_expansion_factor: int = 4
    subsampling_factor: int = 8
    subsampling_conv_channels: int = 256
    conv_kernel_size: int = 9
    conv_norm_type: str = "layer_norm"  # or "batch_norm"
    att_context_size: tuple[Context, ...] = ((70, 13), (70, 6), (70, 1), (70, 0))
    att_context_probs: tuple[float, ...] | None = None
    xscaling: bool = True
    dropout: float = 0.1
    dropout_pre_encoder: float = 0.1
    dropout_att: float = 0.1
    # Not NeMo's: a fixed per-bin (mean, std) normalisation of the log-mel (buffers set from training data).
    # Pointwise, so it streams; NeMo's cache-aware models use none and train far slower from scratch.
    global_cmvn: bool = False

    def __post_init__(self) -> None:
        factor = self.subsampling_factor
        if factor < 2 or factor & (factor - 1):
            raise ValueError(f"subsampling_factor must be a power of two >= 2, got {factor}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}")
        if self.conv_norm_type not in ("layer_norm", "batch_norm"):
            raise ValueError(f"conv_norm_type is 'layer_norm' or 'batch_norm', got {self.conv_norm_type!r}")
        for left, right in self.att_context_size:
            if left < 0 or right < 0:
                raise ValueError(
                    f"cache-aware streaming needs finite contexts [left >= 0, right >= 0], got {[left, right]}"
                )
        if self.att_context_probs is not None and len(self.att_context_probs) != len(self.att_context_size):
            raise ValueError("att_context_probs needs one weight per att_context_size entry")

    @property
    def sampling_num(self) -> int:
        return int(math.log2(self.subsampling_factor))

    @property
    def cache_size(self) -> int:
        """Frames of left context every lookahead shares (NeMo's ``last_channel_cache_size``)."""
        return max(left for left, _ in self.att_context_size)

    def lookahead_ms(self, context: Context, hop_ms: float = 10.0) -> float:
        return context[1] * self.subsampling_factor * hop_ms

    def context_for_lookahead_ms(self, ms: float, hop_ms: float = 10.0) -> Context:
        for context in self.att_context_size:
            if abs(self.lookahead_ms(context, hop_ms) - ms) < 1e-6:
                return context
        offered = ", ".join(f"{self.lookahead_ms(c, hop_ms):g}ms" for c in self.att_context_size)
        raise ValueError(f"lookahead {ms:g}ms is not one this model was trained for; it offers {offered}")


@dataclass(frozen=True)
class HeadsConfig:
    vocab_size: int = 1024  # without the blank, which is the last class
    ctc: bool = True
    rnnt: bool = True
    pred_hidden: int = 640
    pred_rnn_layers: int = 1
    joint_hidden: int = 640
    max_symbols: int = 10
    dropout: float = 0.2
    default_decoder: str | None = None  # not NeMo's: the better head of a hybrid (None: RNNT when present)

    def __post_init__(self) -> None:
        if not (self.ctc or self.rnnt):
            raise ValueError("a model needs a CTC head, an RNNT head, or both")
        heads = [name for name, on in (("rnnt", self.rnnt), ("ctc", self.ctc)) if on]
        if self.default_decoder is not None and self.default_decoder not in heads:
            raise ValueError(f"default_decoder {self.default_decoder!r} is not a head of this model; it has {heads}")

    @property
    def blank(self) -> int:
        return self.vocab_size


@dataclass(frozen=True)
class FastConformerConfig:
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    heads: HeadsConfig = field(default_factory=HeadsConfig)
    features: LogMelConfig = field(default_factory=LogMelConfig)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> FastConformerConfig:
        enc = dict(data["encoder"])
        enc["att_context_size"] = tuple(tuple(c) for c in enc["att_context_size"])
        if enc.get("att_context_probs") is not None:
            enc["att_context_probs"] = tuple(enc["att_context_probs"])
        return cls(EncoderConfig(**enc), HeadsConfig(**data["heads"]), LogMelConfig(**data["features"]))
