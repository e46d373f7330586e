"""Whisper's byte-level BPE vocabulary, its special tokens, and what greedy decoding suppresses."""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer


class WhisperTokens:
    def __init__(self, directory: str | Path) -> None:
        directory = Path(directory)
        path = directory / "tokenizer.json"
        if not path.is_file():
            raise FileNotFoundError(f"{directory}: a Whisper directory needs tokenizer.json")
        self.bpe = Tokenizer.from_file(str(path))
        special = {t["content"]: t["id"] for t in json.loads(path.read_text())["added_tokens"]}
        self.eot = special["<|endoftext|>"]
        self.sot = special["<|startoftranscript|>"]
        self.transcribe = special["<|transcribe|>"]
        self.translate = special["<|translate|>"]
        self.sot_prev = special["<|startofprev|>"]
        self.sot_lm = special["<|startoflm|>"]
        self.no_speech = special.get("<|nospeech|>", special.get("<|nocaptions|>"))
        self.no_timestamps = special["<|notimestamps|>"]
        self.english = special.get("<|en|>")
        config = json.loads((directory / "config.json").read_text())
        self.multilingual = not config.get("is_english_only", config.get("vocab_size", 51865) < 51865)
        suppress, begin = self._suppression(directory)
        self.suppress = sorted(set(suppress) | {self.transcribe, self.translate, self.sot, self.sot_prev,
                                                 self.sot_lm, self.no_speech})
        self.suppress_begin = sorted(set(begin))
        # text tokens that continue the previous word (no leading space): barred right after a committed word
        self.continuations = sorted(i for piece, i in self.bpe.get_vocab().items() if i < self.eot and not piece.startswith("Ġ"))
        self._continuations = frozenset(self.continuations)

    def _suppression(self, directory: Path) -> tuple[list[int], list[int]]:
        """The model's own suppression lists (CTranslate2's config, or a Hugging Face generation config)."""
        for name, keys in (("ct2_generation.json", ("suppress_ids", "suppress_ids_begin")),
                           ("generation_config.json", ("suppress_tokens", "begin_suppress_tokens"))):
            if (directory / name).is_file():
                config = json.loads((directory / name).read_text())
                return list(config.get(keys[0], [])), list(config.get(keys[1], [self.bpe.token_to_id("Ġ"), self.eot]))
        return [], [self.bpe.token_to_id("Ġ"), self.eot]

    def prompt(self) -> list[int]:
        """``<|startoftranscript|>[<|en|><|transcribe|>]<|notimestamps|>``: English, text only."""
        return [self.sot, self.english, self.transcribe, self.no_timestamps] if self.multilingual else [
            self.sot, self.no_timestamps]

    def encode(self, text: str) -> list[int]:
        return self.bpe.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        return self.bpe.decode([i for i in ids if i < self.eot]).strip()

    def starts_word(self, token: int) -> bool:
        """Whether a text token begins a new word (a leading space) rather than continuing the last one."""
        return token not in self._continuations

    def piece(self, token: int) -> str:
        return self.bpe.decode([token])
