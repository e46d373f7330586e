"""`speech bench asr-quality`: WER per lookahead (FastConformer) or per system (Whisper) on the ASR sets.

Sets (none of them is ever trained on): ``an4/test``, ``vctk13``, ``jfk``, the Asterisk Allison prompts
(manifests from `speech corpus real`) and the held-out synthetic voices of the corpus's test split
(`speech corpus build`). A set whose manifest is missing is listed as skipped with the command that
makes it. Each utterance streams through a session in 100 ms pieces; WER is corpus-level after
normalisation: asr.text's for the FastConformer (letters and apostrophes), Whisper's EnglishTextNormalizer
for Whisper (which keeps digits and standardises spellings; Whisper writes numbers as digits).
With ``--model whisper-causal`` the rows are offline Whisper (the upper bound) and, per chunk size, the
causal model without LoRA and with the shipped adapter.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from asr.fastconformer.quantize import quantize_int8
from asr.fastconformer.recognizer import EndpointConfig, Recognizer
from asr.text import wer

from ..asr_models import load_fastconformer
from ..audio import read_audio
from ..corpus.manifest import audio_path, read_manifest
from .report import table, write_json

SETS = {  # name -> (manifest under the real or synth folder, split filter)
    "an4/test": ("real", "an4-test.jsonl", None),
    "vctk13": ("real", "vctk13.jsonl", None),
    "jfk": ("real", "jfk.jsonl", None),
    "allison": ("real", "allison/manifest.jsonl", None),
    "synthetic held-out voices": ("synth", "manifest.jsonl", "test"),
}


@dataclass(frozen=True)
class AsrQualityConfig:
    model: str | None = None
    real: str = "corpora/real"
    synth: str = "corpora/synth"
    max_utterances: int = 200
    decoder: str | None = None
    int8: bool = False
    whisper: str = "base"  # the Whisper of --model whisper-causal / whisper-offline
    chunks_ms: tuple[int, ...] = (300,)  # chunk sizes measured without LoRA even where no adapter is shipped
    onnx: tuple[str, ...] = ()  # ONNX Runtime rows at these precisions beside the torch ones
    sets: tuple[str, ...] | None = None  # None: every set


def _onnx(precision: str):
    from streaming.onnx_backend import OnnxBackend

    from ..exporting import cache_locator

    return OnnxBackend(cache_locator(precision), precision=precision)


System = tuple[str, Callable[[np.ndarray], str]]  # a row's label and its transcriber


def _fastconformer_systems(cfg: AsrQualityConfig) -> tuple[list[System], str]:
    model = load_fastconformer(cfg.model)
    if cfg.int8:
        quantize_int8(model.encoder)
    systems = []
    for context in model.cfg.encoder.att_context_size:
        ms = model.cfg.encoder.lookahead_ms(context)
        for label, backend in [(f"{ms:g}ms", None), *((f"{ms:g}ms onnx {p}", _onnx(p)) for p in cfg.onnx)]:
            rec = Recognizer(model, ms, cfg.decoder, EndpointConfig(enabled=False), backend)
            systems.append((label, lambda audio, rec=rec: " ".join(e.text for e in rec.transcribe(audio) if e.final)))
    title = f"{rec.decoder} decoder{', int8 encoder' if cfg.int8 else ''}, streaming sessions; asr.text normaliser"
    return systems, title


def _whisper_systems(cfg: AsrQualityConfig) -> tuple[list[System], str]:
    """Offline Whisper (upper bound), then per chunk size the causal model without and with LoRA."""
    from asr.whisper.offline import transcribe_offline
    from asr.whisper.streaming import CHUNKS_MS, StreamConfig, stream_signal

    from ..whisper_models import load_causal_whisper, shipped_adapter

    def streaming(model, chunk_ms: int, backend=None) -> Callable[[np.ndarray], str]:
        stream = StreamConfig(chunk_ms=chunk_ms)
        return lambda audio: " ".join(e.text for e in stream_signal(model, audio, stream, backend=backend) if e.final)

    offline = load_causal_whisper(cfg.whisper, adapter=None)
    systems: list[System] = [(f"offline {cfg.whisper}", lambda audio: transcribe_offline(offline, audio).text)]
    for chunk_ms in CHUNKS_MS:
        if shipped_adapter(cfg.whisper, chunk_ms) is None and chunk_ms not in cfg.chunks_ms:
            continue
        systems.append((f"causal {chunk_ms} ms, no LoRA", streaming(offline, chunk_ms)))
        if shipped_adapter(cfg.whisper, chunk_ms) is not None:
            adapted = load_causal_whisper(cfg.whisper, chunk_ms)
            systems.append((f"causal {chunk_ms} ms + LoRA", streaming(adapted, chunk_ms)))
            systems += [(f"causal {chunk_ms} ms + LoRA, onnx {p}", streaming(adapted, chunk_ms, _onnx(p))) for p in cfg.onnx]
    return systems, "greedy, streaming sessions in 100 ms pieces; Whisper's EnglishTextNormalizer (whisper_normalizer)"


def whisper_wer(refs: list[str], hyps: list[str]) -> float:
    import jiwer
    from whisper_normalizer.english import EnglishTextNormalizer

    normalise = EnglishTextNormalizer()
    pairs = [(normalise(r), normalise(h)) for r, h in zip(refs, hyps, strict=True)]
    pairs = [(r, h) for r, h in pairs if r.strip()]
    return jiwer.wer([r for r, _ in pairs], [h for _, h in pairs])


def main(cfg: AsrQualityConfig, json_path: str) -> dict:
    if cfg.int8 and cfg.onnx:
        raise ValueError("--int8 quantises the torch encoder; for int8 ONNX rows use --onnx int8 without --int8")
    whisper = cfg.model in ("whisper-causal", "whisper-offline")
    systems, title = _whisper_systems(cfg) if whisper else _fastconformer_systems(cfg)
    score = whisper_wer if whisper else wer
    folders = {"real": Path(cfg.real), "synth": Path(cfg.synth)}
    sets, skipped = {}, {}
    unknown = set(cfg.sets or ()) - set(SETS)
    if unknown:
        raise ValueError(f"unknown sets {sorted(unknown)}; the sets are {', '.join(SETS)}")
    for name, (folder, file, split) in SETS.items():
        if cfg.sets is not None and name not in cfg.sets:
            continue
        manifest = folders[folder] / file
        if not manifest.is_file():
            skipped[name] = f"no {manifest} (run `speech corpus {'real' if folder == 'real' else 'build'}`)"
            continue
        utts = [u for u in read_manifest(manifest) if split is None or u.split == split][: cfg.max_utterances]
        sets[name] = [(read_audio(audio_path(manifest, u), sample_rate=16000)[0], u.text) for u in utts]
    results, rows = {}, []
    for label, transcribe in systems:
        row = {}
        for name, items in sets.items():
            start = time.perf_counter()
            hyps = [transcribe(audio) for audio, _ in items]
            row[name] = {"wer": 100 * score([t for _, t in items], hyps), "utterances": len(items),
                         "seconds": time.perf_counter() - start}
        results[label] = row
        rows.append([label, *(row[n]["wer"] for n in sets)])
        print(f"{label}: " + ", ".join(f"{n} {row[n]['wer']:.1f}" for n in sets), file=sys.stderr, flush=True)
    print(f"WER % ({title}; at most {cfg.max_utterances} utterances per set)")
    print(table(["system", *(f"{n} ({len(sets[n])})" for n in sets)], rows))
    for name, why in skipped.items():
        print(f"skipped {name}: {why}")
    write_json(json_path, "asr-quality", asdict(cfg), {"wer": results, "skipped": skipped})
    return results
