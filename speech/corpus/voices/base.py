"""What every voice engine provides: a catalogue of voices and a renderer with word timings."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np

Word = tuple[str, float, float]


@dataclass(frozen=True)
class Voice:
    name: str  # "engine/voice", unique in the corpus
    engine: str
    licence: str
    commercial: bool  # False: the voice's licence forbids commercial use (excluded by --commercial-safe)
    sample_rate: int
    timing: str  # "engine": word times come from the synthesiser; "aligner": from speech.corpus.align
    options: tuple = field(default=())  # engine-specific settings, hashable


@dataclass
class Rendered:
    audio: np.ndarray  # float32 mono at voice.sample_rate
    sample_rate: int
    words: list[Word] | None  # one entry per word of the text, None when the engine has no timing


class EngineUnavailable(RuntimeError):
    """An engine's program or package is missing; the message says what to install."""


class Engine(ABC):
    name: str
    debian_packages: tuple[str, ...] = ()
    non_free: bool = False  # needs Debian contrib/non-free

    @abstractmethod
    def voices(self) -> list[Voice]:
        """The catalogue, whether or not the engine is installed."""

    @abstractmethod
    def check(self) -> None:
        """Raise EngineUnavailable when the engine cannot render here."""

    @abstractmethod
    def render(self, voice: Voice, text: str) -> Rendered:
        """Speak `text` (plain words, optional final punctuation) with `voice`."""

    def render_many(self, voice: Voice, texts: list[str]) -> list[Rendered]:
        """Several texts at once; engines that run as a program override this to start it once."""
        return [self.render(voice, t) for t in texts]


def words_of(text: str) -> list[str]:
    """The words a transcript of `text` has: whitespace tokens without surrounding punctuation."""
    return [w for w in (t.strip(".,;:!?\"") for t in text.split()) if w]


def require_modules(engine: str, *modules: str) -> None:
    """EngineUnavailable unless every module is importable; cheap, so a check never loads a model."""
    import importlib.util

    absent = [m for m in modules if importlib.util.find_spec(m) is None]
    if absent:
        raise EngineUnavailable(f"{engine} needs the Python packages {absent} (pip install -e .[corpus])")


def speakable(spoken: str, written: str) -> str:
    """The spoken words with the written sentence's final punctuation (for prosody), first letter capital."""
    end = re.search(r"[.?!]\s*$", written)
    text = spoken[:1].upper() + spoken[1:]
    return text + (end.group().strip() if end else ".")


def word_spans(text: str, timed: dict[int, tuple[float, float]], total: float) -> list[Word]:
    """(word, start, end) for every word of `text`, given the times of some word indices.

    Engines sometimes fold a word into its neighbour (no event of its own): such a word shares the span of
    the timed word before it, split evenly, so every word gets a monotonic span.
    """
    words = words_of(text)
    groups: list[list[int]] = []
    for k in range(len(words)):
        if k in timed or not groups:
            groups.append([k])
        else:
            groups[-1].append(k)
    out: list[Word] = []
    for g, group in enumerate(groups):
        if group[0] in timed:
            start, end = timed[group[0]]
        else:  # untimed words before the first timed one
            start, end = 0.0, timed[groups[g + 1][0]][0] if g + 1 < len(groups) else total
        start, end = min(start, total), min(max(end, start), total)
        step = (end - start) / len(group)
        out.extend((words[k], float(start + step * n), float(start + step * (n + 1))) for n, k in enumerate(group))
    return out
