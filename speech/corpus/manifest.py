"""Corpus manifests: one JSON object per utterance, paths relative to the manifest's folder.

JSON lines rather than the shared TSV because synthetic utterances carry word alignments. Keys are
written sorted and floats rounded so that a rebuild with the same seed gives the same bytes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass
class Utterance:
    utt_id: str
    path: str
    speaker: str
    text: str
    duration_s: float
    sample_rate: int
    voice: str = ""
    engine: str = "human"
    licence: str = ""
    split: str = "train"
    # (word, start_s, end_s) of every word of `text`, in order; None where not aligned (real speech)
    words: list[tuple[str, float, float]] | None = None
    extra: dict = field(default_factory=dict)


def _rounded(utt: Utterance) -> dict:
    row = asdict(utt)
    row["duration_s"] = round(utt.duration_s, 4)
    if utt.words is not None:
        row["words"] = [[w, round(s, 3), round(e, 3)] for w, s, e in utt.words]
    return row


def write_manifest(path: str | Path, utts: Iterable[Utterance]) -> int:
    """Write utterances as JSON lines; returns how many were written."""
    n = 0
    with open(path, "w", encoding="utf-8") as f:
        for utt in utts:
            f.write(json.dumps(_rounded(utt), sort_keys=True, ensure_ascii=False) + "\n")
            n += 1
    return n


def read_manifest(path: str | Path) -> list[Utterance]:
    out = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                if row.get("words") is not None:
                    row["words"] = [tuple(w) for w in row["words"]]
                out.append(Utterance(**row))
            except (json.JSONDecodeError, TypeError) as e:
                raise ValueError(f"{path}:{line_no}: not a corpus manifest line ({e})") from e
    return out


def audio_path(manifest: str | Path, utt: Utterance) -> Path:
    return Path(manifest).parent / utt.path
