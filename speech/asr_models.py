"""Which ASR model a command means: a FastConformer directory, a NeMo `.nemo` file, or the shipped default."""

from __future__ import annotations

from pathlib import Path

from asr.fastconformer.model import FastConformer

DEFAULT_FASTCONFORMER = Path(__file__).parent / "models" / "fastconformer"


class ModelNotFound(FileNotFoundError):
    pass


def load_fastconformer(spec: str | None) -> FastConformer:
    """``None`` or ``fastconformer``: the shipped default; a ``.nemo`` file; or a model directory."""
    if spec in (None, "fastconformer"):
        if not (DEFAULT_FASTCONFORMER / "model.safetensors").is_file():
            raise ModelNotFound(
                f"the default FastConformer is missing from {DEFAULT_FASTCONFORMER} (reinstall the package); "
                "or pass --model with a model directory (config.json, model.safetensors, tokenizer.model) "
                "or a NeMo .nemo file"
            )
        return FastConformer.load(DEFAULT_FASTCONFORMER)
    path = Path(spec)
    if path.suffix == ".nemo":
        from asr.nemo_import import load_nemo

        return load_nemo(path)
    if path.is_dir():
        return FastConformer.load(path)
    raise ModelNotFound(f"--model {spec!r}: not a .nemo file or a model directory")
