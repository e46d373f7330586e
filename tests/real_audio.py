"""Real recordings for end-to-end tests: an4/test from ../shared/data when it is here, else the Asterisk
prompts (Debian's asterisk-core-sounds-en-g722, installed by the set-up); skips when neither is."""

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
    prompts = sorted(ASTERISK_SOUNDS.glob("*.g722"))[:count]
    if len(prompts) < count:
        pytest.skip("no real recordings: ../shared/data/an4 is absent and the Asterisk prompts are not installed")
    return [(p.stem, decode_g722(p)) for p in prompts]
