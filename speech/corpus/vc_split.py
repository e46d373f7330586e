"""Which speech VC may train on and which its benchmark converts: one rule for both, so they never meet.

- LibriSpeech speakers200: every 10th speaker by sorted id (20 of 200) is held out as a *reference* voice
  of ``speech bench vc``; the other 180 train.
- VCTK (``vctk13``): never trained on; its sentences are the benchmark's sources and two of its speakers
  (``VCTK_REFERENCES``) are held-out reference voices.
- Allison: prompts split by sorted id, even ones train and odd ones are benchmark sources.
- AN4 train, LJSpeech 385 and the synthetic corpus voices train (AN4 test, jfk and FSDD are not used).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from .manifest import Utterance, audio_path, read_manifest, write_manifest

LIBRI_EVERY = 10
VCTK_REFERENCES = ("vctk13/p227", "vctk13/p228")


def heldout_libri_speakers(speakers: list[str]) -> set[str]:
    """Every ``LIBRI_EVERY``-th LibriSpeech speaker by sorted id."""
    return set(sorted(set(speakers))[::LIBRI_EVERY])


def allison_split(utt_ids: list[str]) -> tuple[list[str], list[str]]:
    """(training prompts, benchmark prompts) by alternating sorted ids."""
    ordered = sorted(utt_ids)
    return ordered[0::2], ordered[1::2]


def _absolute(manifest: Path, utts: list[Utterance]) -> list[Utterance]:
    for u in utts:
        u.path = str(audio_path(manifest, u).resolve())
        u.split = "train"
    return utts


def training_utterances(real: Path, synth_manifest: Path | None, *, lj_hours: float = 0.25,
                        synth_hours_per_voice: float = 0.1, seed: int = 0) -> list[Utterance]:
    """The VC training set from `speech corpus real`'s manifests (``real``) and the synthetic corpus."""
    rng = random.Random(seed)
    libri_path = real / "librispeech-speakers200.jsonl"
    libri = read_manifest(libri_path)
    held = heldout_libri_speakers([u.speaker for u in libri])
    chosen = _absolute(libri_path, [u for u in libri if u.speaker not in held])
    chosen += _absolute(real / "an4-train.jsonl", read_manifest(real / "an4-train.jsonl"))
    allison_path = real / "allison" / "manifest.jsonl"
    allison = read_manifest(allison_path)
    train_ids = set(allison_split([u.utt_id for u in allison])[0])
    chosen += _absolute(allison_path, [u for u in allison if u.utt_id in train_ids])
    chosen += _absolute(real / "ljspeech385.jsonl", _first_hours(read_manifest(real / "ljspeech385.jsonl"), lj_hours, rng))
    if synth_manifest is not None:
        synth = [u for u in read_manifest(synth_manifest) if u.split == "train"]
        for voice in sorted({u.speaker for u in synth}):
            mine = [u for u in synth if u.speaker == voice]
            chosen += _absolute(synth_manifest, _first_hours(mine, synth_hours_per_voice, rng))
    return chosen


def _first_hours(utts: list[Utterance], hours: float, rng: random.Random) -> list[Utterance]:
    utts = list(utts)
    rng.shuffle(utts)
    out, total = [], 0.0
    for u in utts:
        if total >= hours * 3600:
            break
        out.append(u)
        total += u.duration_s
    return out


def build_vc_pack(out: Path, real: Path, synth_manifest: Path | None, max_mib: float, seed: int = 0) -> dict:
    """Opus shards (``speech corpus pack``'s format) of :func:`training_utterances`, each within ``max_mib``."""
    from .pack import pack

    utts = training_utterances(real, synth_manifest, seed=seed)
    out.mkdir(parents=True, exist_ok=True)
    manifest = out / "sources.jsonl"
    write_manifest(manifest, utts)
    report = pack([manifest], out, hours=1e9, max_mib=max_mib, seed=seed)
    manifest.unlink()
    info = {"utterances": report.utterances, "hours": round(report.hours, 3), "shards": report.shards,
            "speakers": len({u.speaker for u in utts}), "bytes": report.bytes}
    (out / "vc.json").write_text(json.dumps(info, indent=1) + "\n")
    return info
