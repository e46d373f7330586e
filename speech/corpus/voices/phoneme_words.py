"""Word times from a synthesiser's phoneme timeline, for engines that time phonemes, not words.

The sentence is phonemised as a whole (espeak merges words: "of the" -> "ʌvðə"), so words are found in
it by aligning each word's own phonemisation to the sentence's phoneme letters (difflib), and a word
spans its first to its last matched letter.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence

IGNORED = set(" ˈˌːˑ.,;:!?¡¿—…\"'()-^$_")  # stress, length, punctuation, pads


def phoneme_word_times(words: Sequence[str], phonemize: Callable[[str], str],
                       timeline: Sequence[tuple[str, float, float]]) -> dict[int, tuple[float, float]]:
    """timeline: (phoneme symbols, start_s, end_s) in order. Returns word index -> (start_s, end_s)."""
    letters = [(c, start, end) for symbols, start, end in timeline for c in symbols if c not in IGNORED]
    reference, owner = [], []
    for k, word in enumerate(words):
        for c in phonemize(word):
            if c not in IGNORED:
                reference.append(c)
                owner.append(k)
    spans: dict[int, tuple[float, float]] = {}
    matcher = difflib.SequenceMatcher(None, reference, [c for c, _, _ in letters], autojunk=False)
    for a, b, n in matcher.get_matching_blocks():
        for i in range(n):
            k, (_, start, end) = owner[a + i], letters[b + i]
            old = spans.get(k, (start, end))
            spans[k] = (min(old[0], start), max(old[1], end))
    # keep spans monotonic: a word never starts before the previous word's start
    last = 0.0
    for k in sorted(spans):
        start, end = spans[k]
        start = max(start, last)
        spans[k] = (start, max(end, start))
        last = start
    return spans
