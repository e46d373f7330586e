"""`speech corpus whisper-labels`: a pack relabelled in Whisper's own written style, with word times.

The causal-Whisper adapter learns from these labels. Lowercase spoken-form text ("forty three forty two",
"D Y M H R") teaches Whisper's decoder a style it never wrote, and the adapter then spends itself
unlearning Whisper's language prior: it transcribes sounds ("please and dear" for "please enter").
Whisper-style labels keep the decoder's prior and leave the adapter only the causal encoder to learn.

- Synthetic utterances: the written text the voice read ("Send it to 4342 Highland Drive, apartment
  31."), with times mapped from the engine's spoken-form word times (a written word takes the span of the
  spoken words it was read as).
- Real utterances: offline Whisper base's transcript (the teacher, with its word times) where it agrees
  with the reference after Whisper's English normaliser; untranscribed speech takes the teacher's
  transcript unless Whisper doubts it (its own fallback thresholds). Otherwise the row is kept as it was.

Only ``index.jsonl`` is rewritten; ``audio.bin`` is hard-linked (or copied), so the audio is unchanged.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
from collections import Counter
from dataclasses import dataclass
from difflib import SequenceMatcher
from pathlib import Path

import numpy as np
import soundfile as sf

from .loader import read_index, shards_of
from .manifest import read_manifest

LOGPROB_FLOOR = -1.0  # Whisper's own thresholds for a transcript it would decode again
COMPRESSION_CEILING = 2.4

TimedWords = list[list]  # [[word, start, end], ...]


def _key(word: str) -> str:
    return re.sub(r"[^a-z0-9']", "", word.lower())


def written_word_times(written: str, spoken: TimedWords) -> TimedWords:
    """Times for the words of ``written`` from the spoken-form ``spoken`` words the voice said.

    Matching words (case and punctuation aside) keep their times; a run of written words read as a run
    of spoken words ("4342" as "forty three forty two") shares that run's span evenly; a written word
    with no spoken counterpart sits, zero-length, at the previous word's end.
    """
    words = written.split()
    if not spoken or not words:
        return []
    matcher = SequenceMatcher(None, [_key(w) for w in words], [_key(w) for w, _, _ in spoken], autojunk=False)
    timed: TimedWords = []
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal":
            timed += [[words[i1 + k], spoken[j1 + k][1], spoken[j1 + k][2]] for k in range(i2 - i1)]
        elif op == "replace":
            start, end = spoken[j1][1], spoken[j2 - 1][2]
            step = (end - start) / (i2 - i1)
            timed += [[words[i], start + step * (i - i1), start + step * (i - i1 + 1)] for i in range(i1, i2)]
        elif op == "delete":  # written words the voice did not say separately
            at = timed[-1][2] if timed else spoken[0][1]
            timed += [[words[i], at, at] for i in range(i1, i2)]
    return [[w, round(s, 3), round(e, 3)] for w, s, e in timed]


@dataclass(frozen=True)
class TeacherLabel:
    text: str
    words: TimedWords
    confident: bool


def teacher_label(audio: np.ndarray) -> TeacherLabel:
    """Offline Whisper base (greedy, no context) on 16 kHz audio: its text, word times and confidence."""
    from ..judges.whisper import load_whisper_base

    segments, _ = load_whisper_base().transcribe(
        audio.astype(np.float32), language="en", beam_size=1, temperature=0.0, condition_on_previous_text=False,
        word_timestamps=True, vad_filter=False)
    segments = list(segments)
    words = [[w.word.strip(), round(float(w.start), 3), round(float(w.end), 3)] for s in segments for w in s.words or []]
    confident = all(s.avg_logprob >= LOGPROB_FLOOR and s.compression_ratio <= COMPRESSION_CEILING for s in segments)
    return TeacherLabel(" ".join(w for w, _, _ in words), [w for w in words if w[0]], confident and bool(words))


def _normaliser():
    from whisper_normalizer.english import EnglishTextNormalizer

    return EnglishTextNormalizer()


def _relabel_row(row: dict, audio: bytes, written: dict[str, str], normalise) -> tuple[dict, str]:
    """The row with Whisper-style labels, and what was done (for the summary)."""
    if row["utt_id"] in written and row.get("words"):
        return {**row, "text": written[row["utt_id"]], "words": written_word_times(written[row["utt_id"]], row["words"])}, "written"
    label = teacher_label(sf.read(io.BytesIO(audio), dtype="float32")[0])
    if row["text"].strip():
        agrees = label.words and normalise(label.text) == normalise(row["text"])
        return ({**row, "text": label.text, "words": label.words}, "teacher") if agrees else (row, "reference kept")
    return ({**row, "text": label.text, "words": label.words}, "teacher (untranscribed)") if label.confident \
        else (None, "dropped (teacher unsure)")


def relabel_pack(pack: str | Path, out: str | Path, synth_manifest: str | Path | None = None) -> Counter:
    """Writes ``out``: ``pack``'s shards with Whisper-style labels; returns how many rows took which label."""
    pack, out = Path(pack), Path(out)
    written = {}
    if synth_manifest is not None and Path(synth_manifest).is_file():
        written = {u.utt_id: u.extra["written"] for u in read_manifest(synth_manifest) if u.extra.get("written")}
    normalise, counts = _normaliser(), Counter()
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    meta = json.loads((pack / "pack.json").read_text())
    for shard in shards_of(pack):
        target = out / shard.name
        target.mkdir()
        try:
            os.link(shard / "audio.bin", target / "audio.bin")
        except OSError:
            shutil.copyfile(shard / "audio.bin", target / "audio.bin")
        data = (shard / "audio.bin").read_bytes()
        lines = []
        for row in read_index(shard):
            new, what = _relabel_row(row, data[row["offset"] : row["offset"] + row["size"]], written, normalise)
            counts[what] += 1
            if new is not None:
                lines.append(json.dumps(new, ensure_ascii=False) + "\n")
        (target / "index.jsonl").write_text("".join(lines), encoding="utf-8")
    kept = sum(n for what, n in counts.items() if not what.startswith("dropped"))
    (out / "pack.json").write_text(json.dumps({**meta, "utterances": kept, "labels": dict(counts)}, indent=1) + "\n")
    return counts
