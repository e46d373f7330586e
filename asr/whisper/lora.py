"""LoRA adapters (peft) on Whisper's attention projections: add for training, save small, load and merge.

As CarelessWhisper: q, k, v and output projections of encoder self-attention and of decoder self- and
cross-attention; alpha = rank; everything else frozen. Adapters are saved as fp16 safetensors with
peft's ``adapter_config.json`` and our ``stream.json`` (the chunk size they were trained for).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .model import CausalWhisper

TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]
ADAPTER_FILE = "adapter_model.safetensors"


def add_lora(model: CausalWhisper, rank: int = 32, alpha: float | None = None, dropout: float = 0.0) -> None:
    """Wraps the attention projections in place; afterwards only the LoRA matrices require gradients."""
    from peft import LoraConfig, inject_adapter_in_model

    config = LoraConfig(r=rank, lora_alpha=alpha or rank, lora_dropout=dropout, target_modules=TARGETS, bias="none")
    for p in model.hf.parameters():
        p.requires_grad_(False)
    inject_adapter_in_model(config, model.hf)
    model.lora_config = {"r": rank, "lora_alpha": alpha or rank, "target_modules": TARGETS}


@contextmanager
def adapters_disabled(model: CausalWhisper) -> Iterator[None]:
    """Runs the plain Whisper underneath the (unmerged) adapters: the distillation teacher."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    layers = [m for m in model.hf.modules() if isinstance(m, BaseTunerLayer)]
    for layer in layers:
        layer.enable_adapters(False)
    try:
        yield
    finally:
        for layer in layers:
            layer.enable_adapters(True)


def lora_state(model: CausalWhisper) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.hf.state_dict().items() if "lora_" in k}


def save_adapter(model: CausalWhisper, directory: str | Path, chunk_ms: int, base: str, card: str | None = None) -> None:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to(torch.float16).contiguous().cpu() for k, v in lora_state(model).items()}
    save_file(state, directory / ADAPTER_FILE)
    (directory / "adapter_config.json").write_text(json.dumps(model.lora_config, indent=1) + "\n")
    (directory / "stream.json").write_text(json.dumps({"chunk_ms": chunk_ms, "base": base}, indent=1) + "\n")
    if card is not None:
        (directory / "README.md").write_text(card)


def adapter_info(directory: str | Path) -> dict:
    """``{"chunk_ms": ..., "base": ...}`` of a saved adapter."""
    path = Path(directory) / "stream.json"
    if not path.is_file():
        raise FileNotFoundError(f"{directory} is not a Whisper LoRA adapter (no stream.json)")
    return json.loads(path.read_text())


def load_adapter(model: CausalWhisper, directory: str | Path, merge: bool = True) -> None:
    """Adds a saved adapter; ``merge`` folds it into the weights (inference then costs what plain Whisper does)."""
    directory = Path(directory)
    config = json.loads((directory / "adapter_config.json").read_text())
    add_lora(model, config["r"], config["lora_alpha"])
    state = load_file(directory / ADAPTER_FILE)
    missing = set(lora_state(model)) - set(state)
    if missing:
        raise ValueError(f"{directory}: the adapter lacks {len(missing)} LoRA tensors, e.g. {min(missing)}")
    model.hf.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
    if merge:
        _merge(model)


def _merge(model: CausalWhisper) -> None:
    from peft.tuners.lora import LoraLayer

    for name, module in list(model.hf.named_modules()):
        if isinstance(module, LoraLayer):
            module.merge()
            parent_name, _, child = name.rpartition(".")
            setattr(model.hf.get_submodule(parent_name), child, module.get_base_layer())
