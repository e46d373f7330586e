"""What every recogniser emits: partial and final hypotheses of a segment, with word times."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Word:
    text: str
    start: float
    end: float


@dataclass(frozen=True)
class Hypothesis:
    text: str
    words: tuple[Word, ...]
    final: bool
    segment: int
    tokens: tuple[int, ...] = ()
    stable: int = 0  # leading words that will not change any more (committed); all of them when final
