"""A Whisper checkpoint as our encoder and decoder stacks, its vocabulary, and offline greedy decoding.

The weights live in a Hugging Face ``WhisperForConditionalGeneration`` (so peft's LoRA layers wrap its
projections); :class:`WhisperEncoderStack` and :class:`WhisperDecoderStack` run them with the block-causal
mask and explicit caches.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from .decoder import WhisperDecoderStack
from .encoder import WhisperEncoderStack
from .tokens import WhisperTokens

MAX_NEW_TOKENS = 224  # half of Whisper's 448-token context, as Whisper's own decoding


class CausalWhisper(nn.Module):
    def __init__(self, hf: nn.Module, tokens: WhisperTokens) -> None:
        super().__init__()
        self.hf, self.tokens = hf, tokens
        self.encoder = WhisperEncoderStack(hf.model.encoder)
        self.decoder = WhisperDecoderStack(hf.model.decoder, frame_capacity=self.encoder.capacity)

    @classmethod
    def load(cls, directory: str | Path, dtype: torch.dtype = torch.float32) -> CausalWhisper:
        from transformers import WhisperForConditionalGeneration

        hf = WhisperForConditionalGeneration.from_pretrained(directory, dtype=dtype)
        return cls(hf.eval(), WhisperTokens(directory)).eval()

    @torch.inference_mode()
    def greedy(self, encoded: Tensor, max_new_tokens: int = MAX_NEW_TOKENS) -> list[list[int]]:
        """Greedy text tokens for each encoded signal ``[B, T, D]`` (Whisper's suppression rules; no timestamps)."""
        b, t, _ = encoded.shape
        device = encoded.device
        cache = self.decoder.initial_cache(b, encoded.dtype, device)
        zero = torch.zeros(b, dtype=torch.int64, device=device)
        for rows, part in zip((cache.cross_keys, cache.cross_values), self.decoder.project_audio(encoded), strict=True):
            self.decoder.write_rows(rows, part, zero)
        frames = zero + t
        prompt = torch.tensor(self.tokens.prompt(), device=device)[None, None].expand(b, 1, -1)
        hidden, _ = self.decoder.forward_tokens(prompt, zero, frames, cache)
        length = zero + prompt.shape[-1]
        suppress = torch.tensor(self.tokens.suppress, device=device)
        begin = torch.tensor(self.tokens.suppress_begin, device=device)
        out: list[list[int]] = [[] for _ in range(b)]
        done = torch.zeros(b, dtype=torch.bool, device=device)
        for i in range(max_new_tokens):
            scores = self.decoder.output(hidden[:, 0, -1]).float()
            scores[:, suppress] = -torch.inf
            if i == 0:
                scores[:, begin] = -torch.inf
            token = scores.argmax(-1)
            done |= token == self.tokens.eot
            if bool(done.all()) or int(length.max()) >= self.decoder.token_capacity:
                break
            for row in torch.nonzero(~done).flatten().tolist():
                out[row].append(int(token[row]))
            hidden, _ = self.decoder.forward_tokens(token[:, None, None], length, frames, cache)
            length = length + 1
        return out
