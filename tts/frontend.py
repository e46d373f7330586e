"""Text -> phoneme ids: normalisation (``tts.normalize``) and espeak-ng G2P, whole or incremental.

G2P is espeak-ng through ``piper-tts``'s bundled library and data (``piper.phonemize_espeak``), so no
system espeak-ng is needed. Its IPA output is split into code points (NFD) and mapped to ids by the fixed
``PHONEMES`` table of ``tts.phonemes``. Id 0 is padding.

``IncrementalFrontEnd`` takes text as it arrives (tokens of an LLM, words typed) and emits phoneme ids as
soon as ``lookahead_words`` complete words follow them; it never takes back what it emitted.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

from .normalize import MAX_RULE_WORDS, RULES, normalize
from .phonemes import PHONEME_IDS, SPACE

ESPEAK_VOICE = "en-us"


@lru_cache(maxsize=1)
def _espeak():
    from piper.phonemize_espeak import EspeakPhonemizer  # the bundled espeak-ng library and data

    return EspeakPhonemizer()


def phonemize(spoken: str) -> list[str]:
    """Normalised text -> IPA code points; sentences joined by a space."""
    sentences = _espeak().phonemize(ESPEAK_VOICE, spoken) if spoken.strip() else []
    out: list[str] = []
    for sentence in sentences:
        symbols = list(unicodedata.normalize("NFD", "".join(sentence)))
        if out and symbols and out[-1] != " ":
            out.append(" ")
        out += symbols
    return out


def to_ids(phonemes: list[str]) -> list[int]:
    """Known symbols only (espeak-ng's language-switch marks and rare symbols are dropped)."""
    return [PHONEME_IDS[p] for p in phonemes if p in PHONEME_IDS]


def text_to_ids(text: str) -> list[int]:
    """Written text -> phoneme ids, all at once (the offline path)."""
    return to_ids(phonemize(normalize(text)))


class IncrementalFrontEnd:
    """``push`` text pieces as they arrive, ``finish`` at the end; each returns the phoneme ids final now.

    A word is committed once ``lookahead_words`` complete words follow it, together with the words of any
    normalisation rule that reads it with its neighbours ("Jan. 5, 2024"); rules span at most
    ``MAX_RULE_WORDS`` words, so with at least that lookahead the words are normalised as in the whole
    text. Words are phonemized one commit at a time, so the ids do not depend on how the text was split
    when it arrived (espeak-ng's stress of a word can differ from the whole-sentence ``text_to_ids``).
    """

    def __init__(self, lookahead_words: int = MAX_RULE_WORDS) -> None:
        if lookahead_words < MAX_RULE_WORDS:
            raise ValueError(f"lookahead_words must be >= {MAX_RULE_WORDS} (the longest normalisation rule)")
        self.lookahead_words = lookahead_words
        self.buffer = ""
        self.last_id: int | None = None  # the last id emitted, to put one space between commits

    def push(self, piece: str) -> list[int]:
        self.buffer += piece
        complete = max(self.buffer.rfind(" "), self.buffer.rfind("\n")) + 1
        return self._drain(complete, keep_words=self.lookahead_words)

    def finish(self) -> list[int]:
        ids = self._drain(len(self.buffer), keep_words=0)
        self.buffer = ""
        return ids

    def _drain(self, complete: int, keep_words: int) -> list[int]:
        """Commit one word (or one rule's words) at a time while ``keep_words`` complete words stay behind:
        segments then depend only on the text, not on how it was split when it arrived."""
        ids: list[int] = []
        while True:
            text = self.buffer[:complete]
            starts = [m.start() for m in re.finditer(r"\S+", text)]
            if len(starts) <= keep_words:
                return ids
            limit = starts[len(starts) - keep_words] if keep_words else len(text)
            cut = self._rule_safe_cut(text, starts, starts[1] if len(starts) > 1 else len(text))
            if cut > limit:
                return ids
            ids += self._commit(cut)
            complete -= cut

    def _rule_safe_cut(self, text: str, starts: list[int], cut: int) -> int:
        """Move ``cut`` forward past any normalisation match that crosses it (to the next word start)."""
        moved = True
        while moved:
            moved = False
            for pattern, _ in RULES:
                for m in pattern.finditer(text):
                    if m.start() < cut < m.end():
                        cut = next((s for s in starts if s >= m.end()), len(text))
                        moved = True
        return cut

    def _commit(self, cut: int) -> list[int]:
        text, self.buffer = self.buffer[:cut], self.buffer[cut:]
        ids = to_ids(phonemize(normalize(text)))
        if ids and self.last_id not in (None, SPACE) and ids[0] != SPACE:
            ids = [SPACE, *ids]
        self.last_id = ids[-1] if ids else self.last_id
        return ids
