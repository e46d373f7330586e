"""Transcript normalisation and word error rate, the same for training targets and every benchmark."""

from __future__ import annotations

import re


def normalise(text: str) -> str:
    """Lower-case words and apostrophes, single spaces (no punctuation, hyphens split words)."""
    text = re.sub(r"[^a-z' ]+", " ", text.lower().replace("-", " "))
    return " ".join(word.strip("'") for word in text.split() if word.strip("'"))


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """``(edits, reference words)`` of the word-level Levenshtein alignment after normalisation."""
    ref, hyp = normalise(reference).split(), normalise(hypothesis).split()
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        previous, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (r != h))
    return row[len(hyp)], len(ref)


def wer(references: list[str], hypotheses: list[str]) -> float:
    """Corpus WER: total edits over total reference words."""
    edits = words = 0
    for ref, hyp in zip(references, hypotheses, strict=True):
        e, n = word_errors(ref, hyp)
        edits, words = edits + e, words + n
    return edits / max(words, 1)
