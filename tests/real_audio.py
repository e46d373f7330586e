"""Real recordings for end-to-end tests: an4/test from ../shared/data when it is here, else digit strings
spoken by the Asterisk voice (Debian's asterisk-core-sounds-en-g722, installed by the set-up: each digit a
recording, joined with short pauses, like an4's spoken numbers, which the small default model knows);
skips when neither is there."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from speech.audio import read_audio
from speech.corpus.real import ASTERISK_SOUNDS, decode_g722

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
AN4_TEST = DATA / "an4" / "test.tsv"


def real_recordings(count: int) -> list[tuple[str, np.ndarray]]:
    """``count`` real utterances at 16 kHz as float32 holding exact 16-bit values (so PCM16 carries them
    unchanged)."""
    if AN4_TEST.is_file():
        with open(AN4_TEST, encoding="utf-8") as f:
            rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[:count]
        return [(r["utt_id"], read_audio(AN4_TEST.parent / r["path"], sample_rate=16000)[0]) for r in rows]
    digits = {d: ASTERISK_SOUNDS / "digits" / f"{d}.g722" for d in "0123456789"}
    if not all(path.is_file() for path in digits.values()):
        pytest.skip("no real recordings: ../shared/data/an4 is absent and the Asterisk prompts are not installed")
    spoken = {d: decode_g722(path) for d, path in digits.items()}
    pause = np.zeros(4800, np.float32)  # 0.3 s
    rng = np.random.default_rng(0)
    utterances = []
    for _ in range(count):
        number = "".join(rng.choice(list("0123456789"), size=int(rng.integers(3, 7))))
        utterances.append((f"digits-{number}", np.concatenate([x for d in number for x in (spoken[d], pause)])))
    return utterances
