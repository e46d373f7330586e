"""The VC model: content frames + a few seconds of the target voice -> that voice's mel, by causal flow matching.

- **Reference encoder** (the speaker encoder, trained with the decoder): the reference's log-mel through
  convolutions, average-pooled to one *prompt token* per ``ref_stride`` frames, and a global vector (the
  masked mean). No judge's d-vector is used anywhere.
- **Decoder**: the TTS flow decoder's blocks (``tts.acoustic.DecoderBlock``: causal depthwise conv,
  chunk-masked self-attention, feed-forward, AdaLN from the ODE time and the global voice vector) over
  normalised mel ``x_t`` and the content projected to the model width. Each block's attention reads, before
  its rolling window of ``left_context`` past frames, the prompt tokens projected to that block's keys and
  values: the reference is a persistent attention sink, so an hour-long session keeps the voice in view at
  constant memory.

Offline (the parity reference) and streaming run the same blocks: offline masks the whole sequence in
chunks, streaming carries the conv and window caches (``vc.flow_step``).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from streaming.blocks.attention import additive_mask
from tts.acoustic import (
    DecoderBlock,
    MaskedConvBlock,
    NormalisedMel,
    chunk_mask,
    read_weights,
    run_blocks,
    sequence_mask,
    timestep_embedding,
    write_weights,
)


@dataclass(frozen=True)
class VCConfig:
    content_dim: int = 512  # Whisper base's width
    content_layers: int = 4  # the Whisper layers the content comes from (`speech bench vc-content`'s choice)
    content_window: int = 500  # the content encoder's attention ring, frames (10 s)
    n_mels: int = 80
    mel_mean: float = -5.5
    mel_std: float = 2.2
    dim: int = 192
    cond_dim: int = 64
    blocks: int = 6
    heads: int = 4
    ffn: int = 768
    conv_kernel: int = 5
    left_context: int = 96  # mel frames of rolling attention window (1.1 s)
    chunk_sizes: tuple[int, ...] = (6, 1, 12, 24)
    ref_dim: int = 192
    ref_layers: int = 4
    ref_kernel: int = 5
    ref_stride: int = 4  # reference mel frames per prompt token
    prompt_tokens: int = 216  # sink capacity: 864 reference frames, 10 s
    sigma_min: float = 1e-4

    @property
    def max_reference_frames(self) -> int:
        return self.prompt_tokens * self.ref_stride

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> VCConfig:
        return cls(**{**data, "chunk_sizes": tuple(data["chunk_sizes"])})


class ReferenceEncoder(nn.Module):
    """Normalised reference mel ``[B, n_mels, R]`` -> prompt tokens ``[B, S, ref_dim]`` (S = ceil(R / stride)),
    their count, and the global voice vector ``[B, cond_dim]``."""

    def __init__(self, cfg: VCConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.inp = nn.Conv1d(cfg.n_mels, cfg.ref_dim, cfg.ref_kernel, padding=cfg.ref_kernel // 2)
        self.layers = nn.ModuleList(MaskedConvBlock(cfg.ref_dim, cfg.ref_kernel) for _ in range(cfg.ref_layers))
        self.norm = nn.LayerNorm(cfg.ref_dim)
        self.to_global = nn.Sequential(nn.Linear(cfg.ref_dim, cfg.ref_dim), nn.SiLU(), nn.Linear(cfg.ref_dim, cfg.cond_dim))

    def forward(self, mel: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        stride = self.cfg.ref_stride
        pad = (-mel.shape[-1]) % stride
        mel = F.pad(mel, (0, pad))
        inside = sequence_mask(torch.stack([torch.zeros_like(lengths), lengths], 1), mel.shape[-1]).to(mel.dtype)
        x = self.inp(mel * inside) * inside
        for layer in self.layers:
            x = layer(x, inside)
        count = torch.div(lengths + stride - 1, stride, rounding_mode="floor")
        pooled = F.avg_pool1d(x, stride) * stride / F.avg_pool1d(inside, stride).mul(stride).clamp(min=1)
        tokens = self.norm(pooled.transpose(1, 2))
        real = (torch.arange(tokens.shape[1], device=mel.device)[None] < count[:, None]).to(tokens.dtype)[..., None]
        mean = (tokens * real).sum(1) / real.sum(1).clamp(min=1)
        return tokens * real, count, self.to_global(mean)


class VCDecoder(nn.Module):
    """Velocity ``v(x_t, t | content, voice)`` over normalised mel ``[B, n_mels, T]``."""

    def __init__(self, cfg: VCConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.dim
        self.time = nn.Sequential(nn.Linear(cfg.cond_dim, d), nn.SiLU(), nn.Linear(d, cfg.cond_dim))
        self.inp = nn.Linear(cfg.n_mels, d)
        self.content_in = nn.Sequential(nn.LayerNorm(cfg.content_dim), nn.Linear(cfg.content_dim, d))
        self.blocks = nn.ModuleList(DecoderBlock(cfg) for _ in range(cfg.blocks))
        self.sink = nn.ModuleList(nn.Linear(cfg.ref_dim, 2 * d) for _ in range(cfg.blocks))
        self.out_norm = nn.LayerNorm(d)
        self.out = nn.Linear(d, cfg.n_mels)

    def prompt(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """Prompt tokens ``[B, S, ref_dim]`` -> every block's sink keys and values ``[B, blocks, D, S]``."""
        kv = [proj(tokens).transpose(1, 2).chunk(2, dim=1) for proj in self.sink]
        return torch.stack([k for k, _ in kv], 1), torch.stack([v for _, v in kv], 1)

    def run(self, x: Tensor, content: Tensor, t: Tensor, voice: Tensor, conv: Tensor, keys: Tensor,
            values: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """One pass over ``x [B, n_mels, T]`` and ``content [B, content_dim, T]``; ``keys, values [B, blocks, D,
        P]`` are each block's sink then window; additive ``mask [B, 1, T, P + T]``. Returns the velocity, the
        next conv caches ``[B, blocks, D, K-1]`` and this pass's keys and values ``[B, blocks, D, T]``."""
        style = self.time(timestep_embedding(t, self.cfg.cond_dim)) + voice
        h = self.inp(x.transpose(1, 2)) + self.content_in(content.transpose(1, 2))
        return run_blocks(self, h, style, conv, keys, values, mask)

    def forward(self, x: Tensor, content: Tensor, t: Tensor, voice: Tensor, sink_keys: Tensor, sink_values: Tensor,
                prompt_count: Tensor, lengths: Tensor, chunk: int) -> Tensor:
        """Offline over whole sequences under the chunk mask of ``chunk`` frames (the parity reference)."""
        b, _, length = x.shape
        conv = x.new_zeros(b, self.cfg.blocks, self.cfg.dim, self.cfg.conv_kernel - 1)
        frames = chunk_mask(length, chunk, self.cfg.left_context, lengths)
        prompt = prompt_visible(prompt_count, sink_keys.shape[-1])[:, None, :].expand(b, length, -1)
        mask = additive_mask(torch.cat([prompt, frames], dim=-1)[:, None], x.dtype)
        return self.run(x, content, t, voice, conv, sink_keys, sink_values, mask)[0]


def prompt_visible(count: Tensor, capacity: int) -> Tensor:
    """``[B, capacity]``: which sink slots hold a prompt token."""
    return torch.arange(capacity, device=count.device)[None] < count[:, None]


class VCModel(NormalisedMel, nn.Module):
    def __init__(self, cfg: VCConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.reference = ReferenceEncoder(cfg)
        self.decoder = VCDecoder(cfg)

    def voice(self, reference_mel: Tensor, lengths: Tensor) -> dict[str, Tensor]:
        """A reference's natural-log mel ``[B, n_mels, R]`` (R <= max_reference_frames) -> what conditions the
        decoder: ``sink_keys``/``sink_values`` ``[B, blocks, D, prompt_tokens]``, ``prompt_count``, ``voice``."""
        if reference_mel.shape[-1] > self.cfg.max_reference_frames:
            raise ValueError(f"a reference holds at most {self.cfg.max_reference_frames} mel frames, "
                             f"got {reference_mel.shape[-1]}")
        tokens, count, voice = self.reference(self.normalise(reference_mel), lengths)
        tokens = F.pad(tokens, (0, 0, 0, self.cfg.prompt_tokens - tokens.shape[1]))
        keys, values = self.decoder.prompt(tokens)
        return {"sink_keys": keys, "sink_values": values, "prompt_count": count, "voice": voice}

    def flow_loss(self, mel: Tensor, content: Tensor, n_frames: Tensor, reference_mel: Tensor,
                  reference_frames: Tensor, chunk: int) -> Tensor:
        """OT-CFM loss of a padded batch: target ``mel [B, n_mels, T]`` (natural log), ``content [B,
        content_dim, T]`` at mel rate, the reference ``[B, n_mels, R]``."""
        y = self.normalise(mel)
        frame_mask = sequence_mask(torch.stack([torch.zeros_like(n_frames), n_frames], 1), y.shape[-1])
        y = y * frame_mask
        voice = self.voice(reference_mel, reference_frames)
        b = y.shape[0]
        t = 1 - torch.cos(torch.rand(b, device=y.device) * math.pi / 2)  # the cosine schedule of inference
        x0 = torch.randn_like(y)
        sigma = self.cfg.sigma_min
        x_t = (1 - (1 - sigma) * t[:, None, None]) * x0 + t[:, None, None] * y
        target = y - (1 - sigma) * x0
        velocity = self.decoder(x_t, content, t, voice["voice"], voice["sink_keys"], voice["sink_values"],
                                voice["prompt_count"], n_frames, chunk)
        return (((velocity.float() - target) ** 2) * frame_mask).sum() / (frame_mask.sum() * self.cfg.n_mels)


def save_vc(model: VCModel, directory: str | Path) -> None:
    """``model.safetensors`` (fp16) + ``config.json``."""
    write_weights(model, model.cfg.to_dict(), directory)


def load_vc(directory: str | Path) -> VCModel:
    cfg = VCConfig.from_dict(json.loads((Path(directory) / "config.json").read_text()))
    model = VCModel(cfg)
    model.load_state_dict(read_weights(directory))
    return model.eval()
