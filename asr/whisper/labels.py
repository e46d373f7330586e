"""CarelessWhisper's training targets: for audio up to time t, the words already heard, then end-of-text.

Each word's interval is split evenly over its BPE tokens, so a token's end time is known; a prefix ending
at t keeps the tokens that end by t. Without word times (real sets with transcripts only) a prefix is a
target only once it covers the whole utterance.
"""

from __future__ import annotations

from dataclasses import dataclass

from .tokens import WhisperTokens


@dataclass(frozen=True)
class TimedTokens:
    ids: tuple[int, ...]
    ends: tuple[float, ...] | None  # None: no word times
    duration: float


def timed_tokens(tokens: WhisperTokens, text: str, words: list | None, duration: float) -> TimedTokens:
    """Token ids of ``words`` (``[[word, start, end], ...]``) or of ``text``, with each token's end time."""
    if not words:
        return TimedTokens(tuple(tokens.encode(" " + " ".join(text.split()))), None, duration)
    ids: list[int] = []
    ends: list[float] = []
    for word, start, end in words:
        pieces = tokens.encode(" " + word)
        step = (end - start) / len(pieces)
        ids += pieces
        ends += [start + step * (i + 1) for i in range(len(pieces))]
    return TimedTokens(tuple(ids), tuple(ends), duration)


def prefix_target(timed: TimedTokens, t: float) -> list[int] | None:
    """The text tokens a model that has heard ``t`` seconds should emit (before end-of-text); None: no target."""
    if timed.ends is None:
        return list(timed.ids) if t >= timed.duration else None
    return [token for token, end in zip(timed.ids, timed.ends, strict=True) if end <= t]
