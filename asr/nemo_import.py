"""Load NeMo cache-aware FastConformer checkpoints (``.nemo``) without NeMo installed.

A ``.nemo`` file is a tar (plain or gzip) holding ``model_config.yaml``, ``model_weights.ckpt`` (a torch
state dict) and the tokenizer files. CTC (``EncDecCTCModelBPE``), RNNT (``EncDecRNNTBPEModel``) and hybrid
(``EncDecHybridRNNTCTCBPEModel``) models load; anything this runtime cannot reproduce exactly (another
encoder, attention style, subsampling or front end) is refused with the key that differs.
"""

from __future__ import annotations

import io
import re
import tarfile
from pathlib import Path, PurePosixPath
from typing import Any

import torch
import yaml

from streaming.blocks import LogMelConfig

from .fastconformer.config import EncoderConfig, FastConformerConfig, HeadsConfig
from .fastconformer.model import FastConformer
from .tokenizer import Tokenizer


class UnsupportedCheckpoint(ValueError):
    """The checkpoint is valid NeMo but not a model this runtime streams exactly."""


def load_nemo(path: str | Path) -> FastConformer:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such .nemo file: {path}")
    try:
        archive = tarfile.open(path, "r:*")  # noqa: SIM115 - closed by the with block below
    except tarfile.TarError as error:
        raise UnsupportedCheckpoint(f"{path} is not a .nemo archive (a tar file): {error}") from None
    with archive:
        files = {PurePosixPath(m.name).name: m for m in archive.getmembers() if m.isfile()}

        def read(name: str) -> bytes:
            if name not in files:
                raise UnsupportedCheckpoint(f"{path} has no {name}; it holds {sorted(files)}")
            return archive.extractfile(files[name]).read()

        config = _resolve(yaml.safe_load(read("model_config.yaml")))
        state = torch.load(io.BytesIO(read("model_weights.ckpt")), map_location="cpu", weights_only=True)
        tokenizer_file = str(_get(config, "tokenizer.model_path", "")).removeprefix("nemo:")
        tokenizer = Tokenizer(read(PurePosixPath(tokenizer_file).name if tokenizer_file else "tokenizer.model"))
    cfg = config_from_nemo(config, state)
    model = FastConformer(cfg, tokenizer)
    model.load_state_dict(state_from_nemo(state, cfg))
    _check_filterbank(state, cfg.features)
    return model.eval()


def config_from_nemo(config: dict, state: dict[str, torch.Tensor]) -> FastConformerConfig:
    enc = config.get("encoder") or {}
    _require(enc, "_target_", lambda v: str(v).endswith("ConformerEncoder"), "nemo ConformerEncoder")
    _require(enc, "self_attention_model", lambda v: v == "rel_pos", "rel_pos")
    _require(enc, "att_context_style", lambda v: v == "chunked_limited", "chunked_limited")
    _require(enc, "subsampling", lambda v: v == "dw_striding", "dw_striding")
    _require(enc, "causal_downsampling", lambda v: v is True, "true")
    _require(enc, "conv_context_size", lambda v: v == "causal", "causal")
    for key, default in (("untie_biases", True), ("use_bias", True)):
        if enc.get(key, default) is not True:
            raise UnsupportedCheckpoint(f"encoder.{key} is {enc.get(key)!r}; only true is supported")
    if enc.get("remove_bias", False):
        raise UnsupportedCheckpoint("encoder.remove_bias is true; only models with biases are supported")
    contexts = enc["att_context_size"]
    contexts = [contexts] if isinstance(contexts[0], int) else contexts
    probs = enc.get("att_context_probs")
    if probs is not None and len(probs) != len(contexts):
        probs = None  # NeMo's own example lists one weight too many; it only matters for training
    channels = enc.get("subsampling_conv_channels", -1)
    encoder = EncoderConfig(
        feat_in=enc["feat_in"], n_layers=enc["n_layers"], d_model=enc["d_model"], n_heads=enc["n_heads"],
        ff_expansion_factor=enc.get("ff_expansion_factor", 4), subsampling_factor=enc.get("subsampling_factor", 8),
        subsampling_conv_channels=enc["d_model"] if channels in (-1, None) else channels,
        conv_kernel_size=enc.get("conv_kernel_size", 31), conv_norm_type=enc.get("conv_norm_type", "batch_norm"),
        att_context_size=tuple(tuple(c) for c in contexts), att_context_probs=tuple(probs) if probs else None,
        xscaling=enc.get("xscaling", True),
    )
    ctc_weight = next((k for k in ("ctc_decoder.decoder_layers.0.weight", "decoder.decoder_layers.0.weight") if k in state), None)
    has_rnnt = "joint.enc.weight" in state
    if has_rnnt:
        vocab = state[_joint_out_key(state)].shape[0] - 1
    elif ctc_weight:
        vocab = state[ctc_weight].shape[0] - 1
    else:
        raise UnsupportedCheckpoint("the checkpoint has neither an RNNT joint nor a CTC decoder")
    heads = HeadsConfig(vocab_size=vocab, ctc=True, rnnt=False)
    if has_rnnt:
        _require(config.get("joint", {}).get("jointnet", {}), "activation", lambda v: v == "relu", "relu",
                 section_name="joint.jointnet")
        lstm = state["decoder.prediction.dec_rnn.lstm.weight_hh_l0"]
        layers = sum(1 for k in state if re.fullmatch(r"decoder\.prediction\.dec_rnn\.lstm\.weight_hh_l\d+", k))
        heads = HeadsConfig(vocab_size=vocab, ctc=ctc_weight is not None, rnnt=True, pred_hidden=lstm.shape[1],
                            pred_rnn_layers=layers, joint_hidden=state["joint.enc.weight"].shape[0],
                            max_symbols=int(_get(config, "decoding.greedy.max_symbols", 10) or 10))
    return FastConformerConfig(encoder, heads, features_from_nemo(config.get("preprocessor") or {}))


def features_from_nemo(pre: dict) -> LogMelConfig:
    normalize = pre.get("normalize", "per_feature")
    if normalize not in ("NA", None, "none"):
        raise UnsupportedCheckpoint(
            f"preprocessor.normalize is {normalize!r}: per-utterance normalisation cannot stream; "
            "cache-aware models use normalize: NA"
        )
    rate = int(pre.get("sample_rate", 16000))
    for key, accepted in (("window", "hann"), ("frame_splicing", 1), ("log", True), ("mag_power", 2.0),
                          ("log_zero_guard_type", "add"), ("exact_pad", False)):
        if key in pre and pre[key] != accepted:
            raise UnsupportedCheckpoint(f"preprocessor.{key} is {pre[key]!r}; only {accepted!r} is supported")
    return LogMelConfig(
        sample_rate=rate, n_fft=int(pre.get("n_fft") or 512), win_length=round(pre.get("window_size", 0.02) * rate),
        hop_length=round(pre.get("window_stride", 0.01) * rate), n_mels=int(pre.get("features", 64)),
        f_min=float(pre.get("lowfreq") or 0.0), f_max=pre.get("highfreq"),
        preemphasis=pre.get("preemph", 0.97), log_guard=float(pre.get("log_zero_guard_value", 2.0**-24)),
    )


def state_from_nemo(state: dict[str, torch.Tensor], cfg: FastConformerConfig) -> dict[str, torch.Tensor]:
    """NeMo parameter names -> ours (the encoder's are the same)."""
    out = {k: v for k, v in state.items() if k.startswith("encoder.") and not k.startswith("encoder.pos_enc.")}
    for source in ("ctc_decoder.decoder_layers.0", "decoder.decoder_layers.0"):
        if cfg.heads.ctc and f"{source}.weight" in state:
            out["ctc.proj.weight"] = state[f"{source}.weight"].squeeze(-1)
            out["ctc.proj.bias"] = state[f"{source}.bias"]
            break
    if cfg.heads.rnnt:
        out["transducer.embed.weight"] = state["decoder.prediction.embed.weight"]
        for k, v in state.items():
            if k.startswith("decoder.prediction.dec_rnn.lstm."):
                out["transducer.lstm." + k.rsplit(".", 1)[1]] = v
        joint_out = _joint_out_key(state).removesuffix(".weight")
        for ours, theirs in (("joint_enc", "joint.enc"), ("joint_pred", "joint.pred"), ("joint_out", joint_out)):
            out[f"transducer.{ours}.weight"] = state[f"{theirs}.weight"]
            out[f"transducer.{ours}.bias"] = state[f"{theirs}.bias"]
    return out


def _joint_out_key(state: dict[str, torch.Tensor]) -> str:
    keys = sorted(k for k in state if re.fullmatch(r"joint\.joint_net\.\d+\.weight", k))
    if not keys:
        raise UnsupportedCheckpoint("the RNNT joint has no output layer (joint.joint_net.N.weight)")
    return keys[-1]


def _check_filterbank(state: dict[str, torch.Tensor], features: LogMelConfig) -> None:
    """Our mel filters must be NeMo's (librosa Slaney); a mismatch would silently change every feature."""
    from streaming.blocks.mel import mel_filterbank

    fb = state.get("preprocessor.featurizer.fb")
    if fb is not None:
        ours = torch.from_numpy(mel_filterbank(features))
        if fb.squeeze(0).shape != ours.shape or (fb.squeeze(0).float() - ours).abs().max() > 1e-5:
            raise UnsupportedCheckpoint("the checkpoint's mel filterbank differs from librosa's Slaney filters")


def _require(section: dict, key: str, ok: Any, accepted: str, *, section_name: str = "encoder") -> None:
    if key not in section or not ok(section[key]):
        raise UnsupportedCheckpoint(
            f"{section_name}.{key} is {section.get(key)!r}; this runtime streams cache-aware FastConformers "
            f"({key}: {accepted})"
        )


def _get(config: dict, dotted: str, default: Any = None) -> Any:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


_REFERENCE = re.compile(r"^\$\{([^}]+)\}$")


def _resolve(config: dict) -> dict:
    """Resolve OmegaConf ``${a.b}`` references (``model.`` prefixed or not) left in a saved config."""

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        if isinstance(node, str) and (match := _REFERENCE.match(node)):
            target = _get(config, match.group(1).removeprefix("model."))
            return walk(target) if target is not None else node
        return node

    return walk(config)
