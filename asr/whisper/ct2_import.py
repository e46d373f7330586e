"""CTranslate2 Whisper (``model.bin`` of a ``WhisperSpec``) -> a Hugging Face ``WhisperForConditionalGeneration``.

CTranslate2 fuses the self-attention q/k/v projections (and the cross-attention k/v) into one matrix, stores
key projections with a zero bias (Whisper's keys have none), and ties the output projection to the token
embedding by an alias. The file layout (format version 6): a header (version, spec name, revision), then
each variable as name, rank, dims, dtype and raw bytes, then aliases.
"""

from __future__ import annotations

import json
import re
import struct

import numpy as np
import torch

# CTranslate2's DataType enum, in file order
_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}


class UnsupportedCT2Model(ValueError):
    pass


def read_ct2(model_bin: bytes) -> dict[str, np.ndarray]:
    """Every variable of a CTranslate2 ``model.bin``, aliases resolved."""
    view = memoryview(model_bin)
    offset = 0

    def take(fmt: str):
        nonlocal offset
        (value,) = struct.unpack_from(fmt, view, offset)
        offset += struct.calcsize(fmt)
        return value

    def string() -> str:
        nonlocal offset
        n = take("<H")
        text = bytes(view[offset : offset + n - 1]).decode()
        offset += n
        return text

    version = take("<I")
    if version < 5:
        raise UnsupportedCT2Model(f"CTranslate2 model format {version} is too old (5 or newer is read)")
    spec, _revision = string(), take("<I")
    if spec != "WhisperSpec":
        raise UnsupportedCT2Model(f"this is a CTranslate2 {spec}, not a WhisperSpec")
    variables: dict[str, np.ndarray] = {}
    for _ in range(take("<I")):
        name = string()
        shape = tuple(take("<I") for _ in range(take("<B")))
        dtype_id, nbytes = take("<B"), take("<I")
        if dtype_id not in _DTYPES:
            raise UnsupportedCT2Model(f"{name}: CTranslate2 dtype {dtype_id} is not read (float32/16, int8-32 are)")
        variables[name] = np.frombuffer(view[offset : offset + nbytes], dtype=_DTYPES[dtype_id]).reshape(shape)
        offset += nbytes
    for _ in range(take("<I")):
        alias, target = string(), string()
        variables[alias] = variables[target]
    if any(name.endswith("weight_scale") for name in variables):
        raise UnsupportedCT2Model("quantized CTranslate2 weights (int8 with weight_scale) are not converted; "
                                  "use a float16 or float32 conversion")
    return variables


def count_layers(variables: dict[str, np.ndarray], side: str) -> int:
    return len({m.group(1) for k in variables if (m := re.match(rf"{side}/layer_(\d+)/", k))})


def whisper_config(variables: dict[str, np.ndarray], tokenizer_json: str) -> dict:
    """The Hugging Face ``WhisperConfig`` fields implied by the weights and the tokenizer's special tokens."""
    vocab = {t["content"]: t["id"] for t in json.loads(tokenizer_json)["added_tokens"]}
    embed = variables["decoder/embeddings/weight"]
    english_only = embed.shape[0] < 51865
    eot = vocab["<|endoftext|>"]
    return {
        "model_type": "whisper", "architectures": ["WhisperForConditionalGeneration"],
        "vocab_size": int(embed.shape[0]), "d_model": int(embed.shape[1]),
        "num_mel_bins": int(variables["encoder/conv1/weight"].shape[1]),
        "encoder_layers": count_layers(variables, "encoder"), "decoder_layers": count_layers(variables, "decoder"),
        "encoder_attention_heads": int(variables["encoder/num_heads"]),
        "decoder_attention_heads": int(variables["decoder/num_heads"]),
        "encoder_ffn_dim": int(variables["encoder/layer_0/ffn/linear_0/weight"].shape[0]),
        "decoder_ffn_dim": int(variables["decoder/layer_0/ffn/linear_0/weight"].shape[0]),
        "max_source_positions": int(variables["encoder/position_encodings/encodings"].shape[0]),
        "max_target_positions": int(variables["decoder/position_encodings/encodings"].shape[0]),
        "activation_function": "gelu", "scale_embedding": False, "tie_word_embeddings": True,
        "pad_token_id": eot, "bos_token_id": eot, "eos_token_id": eot,
        "decoder_start_token_id": vocab["<|startoftranscript|>"],
        "torch_dtype": "float16", "is_english_only": english_only,
    }


def _split_rows(array: np.ndarray, parts: int) -> list[np.ndarray]:
    return np.split(array, parts, axis=0)


def _layer_norm(variables, source: str, target: str, out: dict) -> None:
    out[f"{target}.weight"] = variables[f"{source}/gamma"]
    out[f"{target}.bias"] = variables[f"{source}/beta"]


def _linear(variables, source: str, target: str, out: dict) -> None:
    out[f"{target}.weight"] = variables[f"{source}/weight"]
    out[f"{target}.bias"] = variables[f"{source}/bias"]


def _fused(variables, source: str, targets: list[str | None], out: dict) -> None:
    """Splits a fused projection; ``k_proj`` gets no bias (CTranslate2 stores zeros there)."""
    weights = _split_rows(variables[f"{source}/weight"], len(targets))
    biases = _split_rows(variables[f"{source}/bias"], len(targets))
    for target, weight, bias in zip(targets, weights, biases, strict=True):
        out[f"{target}.weight"] = weight
        if target.endswith("k_proj"):
            if np.any(bias):
                raise UnsupportedCT2Model(f"{source}: a non-zero key bias cannot be expressed in Whisper")
        else:
            out[f"{target}.bias"] = bias


def hf_state_dict(variables: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """The ``WhisperForConditionalGeneration`` state dict (``model.*`` and ``proj_out``) of CT2 variables."""
    out: dict[str, np.ndarray] = {}
    for side in ("encoder", "decoder"):
        for i in range(count_layers(variables, side)):
            src, dst = f"{side}/layer_{i}", f"model.{side}.layers.{i}"
            _layer_norm(variables, f"{src}/self_attention/layer_norm", f"{dst}.self_attn_layer_norm", out)
            _fused(variables, f"{src}/self_attention/linear_0",
                   [f"{dst}.self_attn.q_proj", f"{dst}.self_attn.k_proj", f"{dst}.self_attn.v_proj"], out)
            _linear(variables, f"{src}/self_attention/linear_1", f"{dst}.self_attn.out_proj", out)
            _layer_norm(variables, f"{src}/ffn/layer_norm", f"{dst}.final_layer_norm", out)
            _linear(variables, f"{src}/ffn/linear_0", f"{dst}.fc1", out)
            _linear(variables, f"{src}/ffn/linear_1", f"{dst}.fc2", out)
            if side == "decoder":
                _layer_norm(variables, f"{src}/attention/layer_norm", f"{dst}.encoder_attn_layer_norm", out)
                _linear(variables, f"{src}/attention/linear_0", f"{dst}.encoder_attn.q_proj", out)
                _fused(variables, f"{src}/attention/linear_1",
                       [f"{dst}.encoder_attn.k_proj", f"{dst}.encoder_attn.v_proj"], out)
                _linear(variables, f"{src}/attention/linear_2", f"{dst}.encoder_attn.out_proj", out)
        _layer_norm(variables, f"{side}/layer_norm", f"model.{side}.layer_norm", out)
        out[f"model.{side}.embed_positions.weight"] = variables[f"{side}/position_encodings/encodings"]
    for conv in ("conv1", "conv2"):
        _linear(variables, f"encoder/{conv}", f"model.encoder.{conv}", out)
    out["model.decoder.embed_tokens.weight"] = variables["decoder/embeddings/weight"]
    out["proj_out.weight"] = variables["decoder/embeddings/weight"]
    return {k: torch.from_numpy(np.array(v)) for k, v in out.items()}
