"""Which steps a model exports and with what facts; the export directory and its manifest; where the ONNX
backend finds a step's file (a directory made by `speech export`, or exported once into the cache).

A directory holds one ONNX file per step, ``manifest.json`` (model, precision, opset, and per step its file,
fingerprint, signature and static-check result) and the tokenizer as a file of its own.
"""

from __future__ import annotations

import base64
import json
import tempfile
from dataclasses import asdict, dataclass
from importlib.metadata import version
from pathlib import Path

from exports.onnx_export import DEFAULT_OPSET, export_step, fingerprint, read_metadata
from exports.quantize import FILE_TAG, int8, weight_matmuls
from exports.static_check import check_file
from streaming.contract import StepFunction
from streaming.onnx_backend import StepMismatch
from streaming.signature_io import signature_to_dict

from .whisper_models import cache_root

PRECISIONS = ("fp32", "fp16", "int8")
MANIFEST = "manifest.json"


@dataclass
class Exportable:
    """A model as the exporter sees it: a name, its step functions, and model-level facts for the files."""

    name: str
    steps: list[StepFunction]
    facts: dict[str, object]  # JSON-able: features, sample rate, decoding settings
    tokenizer: tuple[str, bytes] | None  # (file name, contents); None for a model without text (VC)
    source: dict[str, object]  # how to load the torch model again (`speech export check`)
    model: object = None  # the torch model the steps run (FastConformer or CausalWhisper)
    config: object = None  # its streaming settings where it has them (Whisper's StreamConfig)

    def metadata(self) -> dict[str, str]:
        """What each file carries besides its step: the model, its facts and its tokenizer (base64)."""
        data = {"speech.model": self.name, "speech.version": version("speech-stream"),
                "speech.facts": json.dumps(self.facts)}
        if self.tokenizer is not None:
            name, contents = self.tokenizer
            data |= {"speech.tokenizer_file": name, "speech.tokenizer": base64.b64encode(contents).decode()}
        return data


def load_exportable(source: dict[str, object]) -> Exportable:
    """The model ``source`` names: ``{"model": "fastconformer" | directory | .nemo}`` or ``{"model":
    "whisper-causal", "whisper": base, "chunk_ms": 300, "adapter": "shipped" | directory | None}``."""
    if source["model"] == "tts":
        return tts_exportable(source)
    if source["model"] == "vc":
        return vc_exportable(source)
    if source["model"] == "whisper-causal":
        from asr.whisper.streaming import StreamConfig

        from .whisper_models import load_causal_whisper

        chunk_ms, adapter = int(source.get("chunk_ms", 300)), source.get("adapter", "shipped")
        model = load_causal_whisper(str(source.get("whisper", "base")), chunk_ms, adapter)
        name = f"whisper-{Path(str(source.get('whisper', 'base'))).name}-causal-{chunk_ms}ms" + ("" if adapter else "-nolora")
        return whisper_exportable(model, StreamConfig(chunk_ms=chunk_ms), name, source)
    from .asr_models import load_fastconformer

    spec = source.get("model")
    model = load_fastconformer(None if spec in (None, "fastconformer") else str(spec))
    return fastconformer_exportable(model, "fastconformer" if spec in (None, "fastconformer") else Path(str(spec)).stem,
                                    source)


def fastconformer_exportable(model, name: str = "fastconformer", source: dict | None = None) -> Exportable:
    from asr.fastconformer.steps import fastconformer_steps

    cfg = model.cfg
    facts = {"family": "fastconformer", "sample_rate": cfg.features.sample_rate, "features": asdict(cfg.features),
             "frame_s": model.frame_seconds, "decoders": list(model.decoders), "blank": cfg.heads.blank,
             "max_symbols": cfg.heads.max_symbols,
             "lookahead_ms": {f"fastconformer_encoder_{right}": cfg.encoder.lookahead_ms((left, right))
                              for left, right in cfg.encoder.att_context_size}}
    return Exportable(name, fastconformer_steps(model), facts, ("tokenizer.model", model.tokenizer.proto),
                      source or {"model": "fastconformer"}, model)


def whisper_exportable(model, cfg, name: str, source: dict | None = None) -> Exportable:
    from asr.whisper.features import MEL, SAMPLE_RATE
    from asr.whisper.streaming import whisper_steps

    facts = {"family": "whisper-causal", "sample_rate": SAMPLE_RATE, "features": asdict(MEL),
             "feature_floor": "running maximum - 8 (log10), then (x + 4) / 4", "stream": asdict(cfg),
             "prompt": model.tokens.prompt(), "eot": model.tokens.eot}
    return Exportable(name, list(whisper_steps(model, cfg)), facts, ("tokenizer.json", model.tokens.bpe.to_str().encode()),
                      source or {"model": "whisper-causal", "chunk_ms": cfg.chunk_ms}, model, cfg)


def tts_exportable(source: dict[str, object]) -> Exportable:
    """The TTS steps (flow step at the source's solver settings, vocoder step) of ``{"model": "tts", "path":
    directory or None, "vocoder", "steps", "solver", "guidance", "chunk"}``; the "tokenizer" is the phoneme table."""
    from tts.flow_step import SolverSettings
    from tts.phonemes import PHONEMES
    from tts.synthesizer import step_functions

    from .say import load_tts

    model, vocoder = load_tts(source.get("path"), source.get("vocoder"))
    settings = SolverSettings(steps=int(source.get("steps", 4)), solver=str(source.get("solver", "euler")),
                              guidance=float(source.get("guidance", 0.0)), chunk=int(source.get("chunk", 16)))
    flow, vocoder_step = step_functions(model, vocoder, settings)
    facts = {"family": "tts", "sample_rate": vocoder.cfg.sample_rate, "hop_length": vocoder.cfg.hop_length,
             "n_mels": model.cfg.n_mels, "voices": list(model.cfg.voices), "settings": asdict(settings),
             "mel": "natural log of magnitude (HiFi-GAN's), the flow step's output and the vocoder's input",
             "vocoder_output_delay": vocoder_step.output_delay}
    return Exportable("tts", [flow, vocoder_step], facts, ("phonemes.json", json.dumps(PHONEMES).encode()),
                      {"model": "tts", **{k: source[k] for k in ("path", "vocoder", "steps", "solver", "guidance", "chunk")
                                          if k in source}}, model, settings)


def vc_exportable(source: dict[str, object]) -> Exportable:
    """The VC steps of ``{"model": "vc", "path": directory or None, "vocoder", "steps", "chunk"}``: the voice
    step (reference encoder, once per session), then the live content, VC and vocoder steps."""
    from asr.whisper.features import MEL, SAMPLE_RATE
    from vc.flow_step import VoiceStep

    from .vc_models import load_converter

    converter = load_converter(source.get("path"), source.get("vocoder"), steps=int(source.get("steps", 1)),
                               chunk=source.get("chunk"))
    cfg, vocoder = converter.model.cfg, converter.vocoder.cfg
    facts = {"family": "vc", "input_sample_rate": SAMPLE_RATE, "content_features": asdict(MEL),
             "content_feature_floor": "running maximum - 8 (log10), then (x + 4) / 4",
             "sample_rate": vocoder.sample_rate, "hop_length": vocoder.hop_length, "reference_mel": {
                 "what": "HiFi-GAN's mel: reflect-pad (n_fft - hop) / 2 each side, STFT without centring, magnitude, "
                         "Slaney filters, natural log clamped at 1e-5",
                 **{k: getattr(vocoder, k) for k in ("n_mels", "sample_rate", "hop_length", "n_fft", "fmin", "fmax")}},
             "reference_frames": cfg.max_reference_frames, "settings": asdict(converter.settings),
             "mel_frame_reads_content_frame": "floor((256 m + 128) * 50 / 22050): the one under the mel frame's centre",
             "vocoder_output_delay": converter.steps["vocoder"].output_delay}
    return Exportable("vc", [VoiceStep(converter.model), *converter.steps.values()], facts, None,
                      {"model": "vc", **{k: source[k] for k in ("path", "vocoder", "steps", "chunk") if k in source}},
                      converter, converter.settings)


def export_model(model: Exportable, directory: str | Path, precision: str = "fp32", opset: int = DEFAULT_OPSET,
                 log=print) -> Path:
    """Every step of ``model`` into ``directory`` at ``precision``; returns the manifest's path."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    entries = []
    for step in model.steps:
        path = export_one(step, directory / f"{step.name}.onnx", precision, opset, model.metadata())
        report = check_file(path)
        entries.append({"step": step.name, "file": path.name, "fingerprint": read_metadata(path)["speech.fingerprint"],
                        "signature": signature_to_dict(step.signature), "bytes": path.stat().st_size,
                        "checks": {"ok": report.ok, "problems": report.problems,
                                   "non_tensorrt_ops": report.non_tensorrt_ops}}
                       | ({"weight_matmuls": weight_matmuls(path)} if precision == "int8" else {}))
        log(f"{path}: {path.stat().st_size / 2**20:.1f} MiB, checks {'ok' if report.ok else report.problems}")
    name = None
    if model.tokenizer is not None:
        name, data = model.tokenizer
        (directory / name).write_bytes(data)
    manifest = {"format": "speech-onnx/1", "model": model.name, "version": version("speech-stream"),
                "precision": precision, "opset": opset, "tokenizer": name, "source": model.source,
                "facts": model.facts, "steps": entries}
    path = directory / MANIFEST
    path.write_text(json.dumps(manifest, indent=1, default=str) + "\n")
    return path


def export_one(step: StepFunction, path: Path, precision: str, opset: int = DEFAULT_OPSET,
               metadata: dict[str, str] | None = None) -> Path:
    """One step file at ``precision`` (int8: quantised from an fp32 export)."""
    if precision != "int8":
        return export_step(step, path, precision=precision, opset=opset, metadata=metadata)
    with tempfile.TemporaryDirectory(dir=path.parent) as scratch:
        fp32 = export_step(step, Path(scratch) / path.name, precision="fp32", opset=opset, metadata=metadata)
        return int8(fp32, path)


def read_manifest(directory: str | Path) -> dict:
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{directory} has no {MANIFEST}: make one with `speech export MODEL -o {directory}`")
    return json.loads(path.read_text())


def directory_locator(directory: str | Path):
    """``locate(step)`` for the ONNX backend over a `speech export` directory (fingerprints checked), and the
    directory's precision."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    entries = {entry["step"]: entry for entry in manifest["steps"]}

    def locate(step: StepFunction) -> Path:
        entry = entries.get(step.name)
        if entry is None:
            raise StepMismatch(f"{directory} (model {manifest['model']}) has no step {step.name!r}; it has "
                               f"{', '.join(entries)}")
        if entry["fingerprint"] != fingerprint(step):
            raise StepMismatch(f"{directory / entry['file']} was exported from other weights or settings than the "
                               f"model loaded now ({step.name}); re-export it")
        return directory / entry["file"]

    return locate, manifest["precision"]


def cache_locator(precision: str = "fp32"):
    """``locate(step)`` that exports a step into the cache the first time it is asked for (keyed by its
    fingerprint, so new weights get new files)."""
    root = cache_root() / "onnx"

    def locate(step: StepFunction) -> Path:
        path = root / f"{step.name}-{fingerprint(step)}-{FILE_TAG if precision == 'int8' else precision}.onnx"
        if not path.is_file():
            root.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=root) as scratch:
                export_one(step, Path(scratch) / path.name, precision).rename(path)
        return path

    return locate
