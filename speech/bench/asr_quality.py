"""`speech bench asr-quality`: WER per lookahead on the ASR evaluation sets, through streaming sessions.

Sets (none of them is ever trained on): ``an4/test``, ``vctk13``, ``jfk``, the Asterisk Allison prompts
(manifests from `speech corpus real`) and the held-out synthetic voices of the corpus's test split
(`speech corpus build`). A set whose manifest is missing is listed as skipped with the command that
makes it. Each utterance streams through a session in 100 ms pieces; WER is corpus-level after
normalisation (asr.text).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

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


def main(cfg: AsrQualityConfig, json_path: str) -> dict:
    model = load_fastconformer(cfg.model)
    if cfg.int8:
        quantize_int8(model.encoder)
    folders = {"real": Path(cfg.real), "synth": Path(cfg.synth)}
    sets, skipped = {}, {}
    for name, (folder, file, split) in SETS.items():
        manifest = folders[folder] / file
        if not manifest.is_file():
            skipped[name] = f"no {manifest} (run `speech corpus {'real' if folder == 'real' else 'build'}`)"
            continue
        utts = [u for u in read_manifest(manifest) if split is None or u.split == split][: cfg.max_utterances]
        sets[name] = [(read_audio(audio_path(manifest, u), sample_rate=16000)[0], u.text) for u in utts]
    results, rows = {}, []
    for context in model.cfg.encoder.att_context_size:
        ms = model.cfg.encoder.lookahead_ms(context)
        rec = Recognizer(model, ms, cfg.decoder, EndpointConfig(enabled=False))
        row = {}
        for name, items in sets.items():
            start = time.perf_counter()
            hyps = [" ".join(e.text for e in rec.transcribe(audio) if e.final) for audio, _ in items]
            row[name] = {"wer": 100 * wer([t for _, t in items], hyps), "utterances": len(items),
                         "seconds": time.perf_counter() - start}
        results[f"{ms:g}ms"] = row
        rows.append([f"{ms:g} ms", *(row[n]["wer"] for n in sets)])
    print(f"WER % ({rec.decoder} decoder{', int8 encoder' if cfg.int8 else ''}, streaming sessions; at most {cfg.max_utterances} utterances per set)")
    print(table(["lookahead", *(f"{n} ({len(sets[n])})" for n in sets)], rows))
    for name, why in skipped.items():
        print(f"skipped {name}: {why}")
    write_json(json_path, "asr-quality", asdict(cfg), {"wer": results, "skipped": skipped})
    return results
