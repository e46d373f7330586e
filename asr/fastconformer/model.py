"""A FastConformer ASR model: features, encoder, CTC and/or RNNT heads, tokenizer, and its files on disk.

Shipped models are a directory: ``config.json``, ``model.safetensors`` (fp16) and ``tokenizer.model``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from streaming.blocks import log_mel_offline

from ..tokenizer import Tokenizer
from .config import Context, FastConformerConfig
from .encoder import FastConformerEncoder
from .heads import CTCHead, Transducer


class FastConformer(nn.Module):
    def __init__(self, cfg: FastConformerConfig, tokenizer: Tokenizer) -> None:
        super().__init__()
        if tokenizer.vocab_size != cfg.heads.vocab_size:
            raise ValueError(f"tokenizer has {tokenizer.vocab_size} pieces, the heads expect {cfg.heads.vocab_size}")
        self.cfg, self.tokenizer = cfg, tokenizer
        self.encoder = FastConformerEncoder(cfg.encoder)
        self.ctc = CTCHead(cfg.encoder.d_model, cfg.heads.vocab_size) if cfg.heads.ctc else None
        self.transducer = Transducer(cfg.encoder.d_model, cfg.heads) if cfg.heads.rnnt else None

    @property
    def decoders(self) -> tuple[str, ...]:
        """The model's heads, its default decoder first."""
        heads = [name for name, head in (("rnnt", self.transducer), ("ctc", self.ctc)) if head is not None]
        return tuple(sorted(heads, key=lambda name: name != self.cfg.heads.default_decoder))

    @property
    def frame_seconds(self) -> float:
        return self.cfg.encoder.subsampling_factor * self.cfg.features.hop_length / self.cfg.features.sample_rate

    def features(self, audio: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``[B, N]`` 16 kHz audio -> log-mel ``[B, feat, 1 + N // hop]`` and valid frame counts ``N // hop``.

        NeMo counts ``N // hop`` frames and zeroes the last, half-padded one; so do we (and streaming).
        """
        mel = log_mel_offline(audio, self.cfg.features)
        if lengths is None:
            lengths = torch.full((audio.shape[0],), audio.shape[1], dtype=torch.int64, device=audio.device)
        frames = torch.div(lengths, self.cfg.features.hop_length, rounding_mode="floor")
        valid = torch.arange(mel.shape[-1], device=mel.device)[None, :] < frames[:, None]
        return mel.masked_fill(~valid[:, None, :], 0.0), frames

    def encode(self, audio: Tensor, lengths: Tensor | None = None, context: Context | None = None) -> tuple[Tensor, Tensor]:
        mel, frames = self.features(audio, lengths)
        return self.encoder(mel, frames, context)

    # ---- files ----------------------------------------------------------------------------------
    def save(self, directory: str | Path, card: str | None = None) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().to(torch.float16 if v.is_floating_point() else v.dtype).contiguous().cpu()
                 for k, v in self.state_dict().items()}
        save_file(state, directory / "model.safetensors")
        (directory / "config.json").write_text(json.dumps(self.cfg.to_dict(), indent=1) + "\n")
        (directory / "tokenizer.model").write_bytes(self.tokenizer.proto)
        if card is not None:
            (directory / "README.md").write_text(card)

    @classmethod
    def load(cls, directory: str | Path) -> FastConformer:
        directory = Path(directory)
        missing = [n for n in ("config.json", "model.safetensors", "tokenizer.model") if not (directory / n).is_file()]
        if missing:
            raise FileNotFoundError(f"{directory} is not a FastConformer model directory: missing {', '.join(missing)}")
        cfg = FastConformerConfig.from_dict(json.loads((directory / "config.json").read_text()))
        model = cls(cfg, Tokenizer.from_file(directory / "tokenizer.model"))
        state = {k: v.float() if v.is_floating_point() else v for k, v in load_file(directory / "model.safetensors").items()}
        model.load_state_dict(state)
        return model.eval()
