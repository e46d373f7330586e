"""SentencePiece tokenizer shared by the ASR models: ids <-> text and word boundaries from pieces."""

from __future__ import annotations

from pathlib import Path

import sentencepiece as spm

WORD_START = "\u2581"


class Tokenizer:
    def __init__(self, model_proto: bytes) -> None:
        self.proto = model_proto
        self.sp = spm.SentencePieceProcessor(model_proto=model_proto)

    @classmethod
    def from_file(cls, path: str | Path) -> Tokenizer:
        return cls(Path(path).read_bytes())

    @property
    def vocab_size(self) -> int:
        return self.sp.get_piece_size()

    def encode(self, text: str) -> list[int]:
        return self.sp.encode(text, out_type=int)

    def decode(self, ids: list[int]) -> str:
        return self.sp.decode(ids)

    def starts_word(self, token: int) -> bool:
        return self.sp.id_to_piece(token).startswith(WORD_START)

    def words(self, tokens: list[tuple[int, float]], frame_s: float) -> list[tuple[str, float, float]]:
        """Group ``(token, start time)`` into ``(word, start, end)``; a word ends one frame after its last token."""
        groups: list[list[tuple[int, float]]] = []
        for token, time in tokens:
            if not groups or self.starts_word(token):
                groups.append([])
            groups[-1].append((token, time))
        out = []
        for group in groups:
            text = self.decode([t for t, _ in group]).strip()
            if text:
                out.append((text, group[0][1], group[-1][1] + frame_s))
        return out
