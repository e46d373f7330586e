"""Forced word alignment for voices whose engine gives no timing, and its validation against engines.

Whisper base (faster-whisper) is forced through the known transcript and its alignment heads give word
times by DTW; each span is then trimmed to the speech it holds (frame energy), because Whisper's spans
absorb the pauses around a word and the engines' spans do not.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..audio import resample
from .voices.base import Word, words_of

FRAME_S = 0.01
SILENCE_DB = -40.0  # a frame this far below the utterance's loudest frame is silence
# Whisper's DTW word times lead the audio. Shifting them by this much minimised the disagreement with the
# engines' own times on 6 gate sentences x 10 engine-timed voices (test-split text, never in the corpus):
# median 70 -> 50 ms, p90 190 -> 130 ms (scripts/calibrate_aligner.py reproduces the sweep).
WHISPER_LAG_S = 0.06


def _frame_db(audio: np.ndarray, rate: int) -> np.ndarray:
    hop = int(rate * FRAME_S)
    n = len(audio) // hop
    power = (audio[: n * hop].reshape(n, hop).astype(np.float64) ** 2).mean(1) + 1e-12
    db = 10 * np.log10(power)
    return db - db.max()


def trim_to_speech(words: list[Word], audio: np.ndarray, rate: int) -> list[Word]:
    """Move each word's start forward and end back past silent frames (never to an empty span)."""
    db = _frame_db(audio, rate)
    loud = db > SILENCE_DB
    out = []
    for w, start, end in words:
        a, b = round(start / FRAME_S), round(end / FRAME_S)
        a, b = max(0, min(a, len(loud))), max(0, min(b, len(loud)))
        idx = np.flatnonzero(loud[a:b])
        if len(idx):
            start, end = max(start, (a + idx[0]) * FRAME_S), min(end, (a + idx[-1] + 1) * FRAME_S)
        out.append((w, start, end))
    return out


def whisper_align(text: str, audio: np.ndarray, rate: int) -> list[Word]:
    """(word, start, end) for every word of `text` spoken in `audio`."""
    from ..judges.whisper import WHISPER_SAMPLE_RATE, force_align

    audio16 = resample(audio, rate, WHISPER_SAMPLE_RATE) if rate != WHISPER_SAMPLE_RATE else audio
    words = words_of(text)
    timed = [(t.word, t.start + WHISPER_LAG_S, t.end + WHISPER_LAG_S) for t in force_align(words, audio16)]
    return trim_to_speech(timed, audio, rate)


@dataclass
class Disagreement:
    utterances: int
    boundaries: int
    median_ms: float
    p90_ms: float
    within_40ms: float  # share of boundaries that differ by at most 40 ms


def boundary_disagreement(pairs: list[tuple[list[Word], list[Word]]]) -> Disagreement:
    """Compare word starts and ends of two alignments of the same utterances (same words, same order)."""
    diffs = []
    for a, b in pairs:
        if [w for w, _, _ in a] != [w for w, _, _ in b]:
            raise ValueError("alignments to compare must have the same words in the same order")
        for (_, s1, e1), (_, s2, e2) in zip(a, b):
            diffs += [abs(s1 - s2), abs(e1 - e2)]
    d = np.array(diffs) * 1000
    return Disagreement(len(pairs), len(d), float(np.median(d)), float(np.percentile(d, 90)),
                        float((d <= 40).mean()))


def check_alignments(manifest: str, utterances: int = 200) -> tuple[Disagreement, dict[str, Disagreement]]:
    """Engine word times vs the forced aligner on `utterances` engine-timed utterances, spread over voices."""
    import soundfile as sf

    from .manifest import audio_path, read_manifest

    by_voice: dict[str, list] = {}
    for utt in read_manifest(manifest):
        if utt.words and utt.extra.get("timing") == "engine":
            by_voice.setdefault(utt.voice, []).append(utt)
    chosen, round_ = [], 0
    while len(chosen) < utterances and any(round_ < len(v) for v in by_voice.values()):
        for voice in sorted(by_voice):
            if round_ < len(by_voice[voice]) and len(chosen) < utterances:
                chosen.append(by_voice[voice][round_])
        round_ += 1
    pairs: dict[str, list] = {}
    for utt in chosen:
        audio, rate = sf.read(audio_path(manifest, utt), dtype="float32")
        engine_words = [(w, s, e) for w, s, e in utt.words]
        pairs.setdefault(utt.engine, []).append((engine_words, whisper_align(utt.text, audio, rate)))
    overall = boundary_disagreement([p for ps in pairs.values() for p in ps])
    return overall, {engine: boundary_disagreement(ps) for engine, ps in sorted(pairs.items())}
