"""The acoustic model: phoneme ids -> durations and an 80-bin mel, by chunk-aware causal flow matching.

- **Text encoder**: phoneme and speaker embeddings, a stack of convolutions (no attention), so each
  phoneme's encoding depends on at most ``text_reach`` phonemes either side: that bounded lookahead is
  what lets text stream in (``tts.synthesizer.TextWindow``). It gives ``mu``, the mean of the prior over the
  mel frames a phoneme covers (Glow-TTS/Matcha-TTS), ``frame_dim`` more learnt features per phoneme, and a
  duration predictor on the detached encoding.
- **Alignment**: monotonic alignment search between the mel and ``mu`` (``tts.alignment``) gives the
  durations the predictor learns and the frame-level condition (``frame_condition``): each frame gets its
  phoneme's ``mu`` and features and where it sits inside the phoneme (frames since its start and until its
  end). A causal decoder cannot look ahead to the next phoneme, so it is told how far away that is and
  what it is (the phoneme's features see its neighbours) to shape the transition.
- **Flow decoder**: OT-CFM (Matcha-TTS) velocity field over normalised mel frames, conditioned on
  the frame condition, the speaker and the ODE time. Blocks of causal depthwise convolution, self-attention with a
  chunk mask (CosyVoice 2: a frame sees its own chunk and ``left_context`` frames before the chunk) and a
  feed-forward layer, each modulated by (time, speaker). Trained over several chunk sizes, so one model
  serves several latencies; the chunk size of a stream is chosen at inference.

Every decoder block runs the same code offline (whole sequence, zero caches, chunk mask) and streaming
(one chunk, the caches of the previous chunks), which is why the two agree to float precision.
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
from streaming.blocks.causal_conv import CausalConv1d

from .alignment import monotonic_alignment
from .phonemes import VOCAB_SIZE

POSITION_FEATURES = 4


@dataclass(frozen=True)
class AcousticConfig:
    voices: tuple[str, ...] = ("lj", "allison", "joe", "slt", "awb", "alpha", "kumo")
    default_voice: str | None = None  # the voice when none is asked for (None: the first); the card says why
    vocab: int = VOCAB_SIZE
    n_mels: int = 80
    mel_mean: float = -5.5
    mel_std: float = 2.2
    text_dim: int = 192
    text_layers: int = 4
    text_kernel: int = 5
    frame_dim: int = 32  # learnt phoneme features per frame beside mu
    duration_layers: int = 2
    duration_kernel: int = 3
    dim: int = 192
    cond_dim: int = 64  # (time, speaker) condition; each block maps it to its AdaLN scales and shifts
    blocks: int = 6
    heads: int = 4
    ffn: int = 768
    conv_kernel: int = 5
    left_context: int = 64
    chunk_sizes: tuple[int, ...] = (1, 8, 16, 32, 64)
    sigma_min: float = 1e-4
    condition_dropout: float = 0.2

    @property
    def speaking_voice(self) -> str:
        """The voice used when a request names none."""
        return self.default_voice or self.voices[0]

    @property
    def cond_channels(self) -> int:
        """Channels of the frame condition: ``mu``, the phoneme features, the position features."""
        return self.n_mels + self.frame_dim + POSITION_FEATURES

    @property
    def text_reach(self) -> int:
        """Phonemes either side that one phoneme's ``mu`` and duration depend on."""
        return (self.text_layers * (self.text_kernel // 2)) + self.duration_layers * (self.duration_kernel // 2)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> AcousticConfig:
        data = dict(data)
        for key in ("voices", "chunk_sizes"):
            data[key] = tuple(data[key])
        return cls(**data)


class MaskedConvBlock(nn.Module):
    """Residual ``x + ReLU(conv(LayerNorm(x)))`` with the input zeroed outside the sequence, as zero padding is."""

    def __init__(self, dim: int, kernel: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.conv = nn.Conv1d(dim, dim, kernel, padding=kernel // 2)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, inside: Tensor) -> Tensor:
        h = self.norm(x.transpose(1, 2)).transpose(1, 2) * inside
        return (x + self.dropout(F.relu(self.conv(h)))) * inside


def sequence_mask(bounds: Tensor, length: int) -> Tensor:
    """``[B, 1, length]`` float mask of positions ``bounds[:, 0] <= n < bounds[:, 1]``."""
    n = torch.arange(length, device=bounds.device)
    return ((n >= bounds[:, :1]) & (n < bounds[:, 1:])).to(torch.float32)[:, None]


class TextEncoder(nn.Module):
    """Phoneme ids ``[B, N]`` -> ``phonemes [B, n_mels + frame_dim, N]`` (``mu`` in normalised mel space,
    then the features) and ``log_durations [B, N]``.

    ``bounds [B, 2]`` are the positions of the window that are real phonemes (the rest is outside the
    sequence and treated as the offline zero padding); a window of a longer sequence with the right
    bounds gives the same values at every position whose ``text_reach`` neighbours are inside it."""

    def __init__(self, cfg: AcousticConfig) -> None:
        super().__init__()
        self.embed = nn.Embedding(cfg.vocab, cfg.text_dim, padding_idx=0)
        self.speaker = nn.Embedding(len(cfg.voices), cfg.text_dim)
        self.layers = nn.ModuleList(MaskedConvBlock(cfg.text_dim, cfg.text_kernel) for _ in range(cfg.text_layers))
        self.to_mu = nn.Conv1d(cfg.text_dim, cfg.n_mels, 1)
        self.to_features = nn.Conv1d(cfg.text_dim, cfg.frame_dim, 1)
        self.duration = nn.ModuleList(MaskedConvBlock(cfg.text_dim, cfg.duration_kernel)
                                      for _ in range(cfg.duration_layers))
        self.duration_speaker = nn.Embedding(len(cfg.voices), cfg.text_dim)
        self.to_log_duration = nn.Conv1d(cfg.text_dim, 1, 1)

    def forward(self, ids: Tensor, speaker: Tensor, bounds: Tensor) -> tuple[Tensor, Tensor]:
        inside = sequence_mask(bounds, ids.shape[1]).to(self.embed.weight.dtype)
        x = (self.embed(ids) + self.speaker(speaker)[:, None]).transpose(1, 2) * inside
        for layer in self.layers:
            x = layer(x, inside)
        phonemes = torch.cat([self.to_mu(x), self.to_features(x)], dim=1) * inside
        d = (x.detach() + self.duration_speaker(speaker)[:, :, None]) * inside
        for layer in self.duration:
            d = layer(d, inside)
        return phonemes, self.to_log_duration(d)[:, 0] * inside[:, 0]


def durations_from_log(log_durations: Tensor, length_scale: float = 1.0) -> Tensor:
    """Predicted frames per phoneme: ``ceil(exp(log d) * length_scale)``, at least 1 (Matcha-TTS)."""
    return torch.clamp(torch.ceil(torch.exp(log_durations) * length_scale), min=1).long()


def position_features(durations: Tensor, phoneme_of_frame: Tensor) -> Tensor:
    """``[B, 4, T]``: where each frame sits inside its phoneme (``durations [B, N]``, ``phoneme_of_frame
    [B, T]``): log(1 + frames since its start), log(1 + frames until its end), the fraction done, log of
    its length. Relative to the phoneme only, so a stream can expand any run of whole phonemes alone."""
    length = durations.gather(1, phoneme_of_frame).clamp(min=1).to(torch.float32)
    start = (durations.cumsum(1) - durations).gather(1, phoneme_of_frame)
    since = (torch.arange(phoneme_of_frame.shape[1], device=durations.device)[None] - start).to(torch.float32)
    until = (length - 1 - since).clamp(min=0)  # (padding frames lie past the last phoneme)
    return torch.stack([torch.log1p(since), torch.log1p(until), (since + 0.5) / length, torch.log(length)], 1)


def frame_condition(phonemes: Tensor, durations: Tensor) -> Tensor:
    """Phoneme level ``[C, N]`` and frames per phoneme ``[N]`` -> the decoder's frame condition
    ``[C + 4, sum(durations)]`` (each phoneme's columns repeated, then its position features)."""
    which = torch.repeat_interleave(torch.arange(len(durations), device=durations.device), durations)
    positions = position_features(durations[None], which[None])[0].to(phonemes.dtype)
    return torch.cat([phonemes[:, which], positions], dim=0)


def timestep_embedding(t: Tensor, dim: int) -> Tensor:
    half = dim // 2
    dtype = torch.promote_types(t.dtype, torch.float32)  # at least fp32 (bf16 training), fp64 where asked
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=dtype) / half)
    angles = 1000.0 * t.to(dtype)[:, None] * freqs[None]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)


class DecoderBlock(nn.Module):
    """Causal depthwise conv, chunk-masked self-attention with a K/V cache, feed-forward; AdaLN from ``cond``."""

    def __init__(self, cfg: AcousticConfig) -> None:
        super().__init__()
        d = cfg.dim
        self.heads = cfg.heads
        self.modulation = nn.Linear(cfg.cond_dim, 6 * d)
        nn.init.zeros_(self.modulation.weight)
        nn.init.zeros_(self.modulation.bias)
        self.conv_norm = nn.LayerNorm(d, elementwise_affine=False)
        self.conv = CausalConv1d(d, d, cfg.conv_kernel, groups=d)
        self.conv_out = nn.Linear(d, d)
        self.attn_norm = nn.LayerNorm(d, elementwise_affine=False)
        self.qkv = nn.Linear(d, 3 * d)
        self.attn_out = nn.Linear(d, d)
        self.ffn_norm = nn.LayerNorm(d, elementwise_affine=False)
        self.ffn = nn.Sequential(nn.Linear(d, cfg.ffn), nn.GELU(), nn.Linear(cfg.ffn, d))

    def forward(self, x: Tensor, cond: Tensor, conv_cache: Tensor, k_past: Tensor, v_past: Tensor,
                mask: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``x [B, T, D]``; ``conv_cache [B, D, K-1]``; ``k_past, v_past [B, D, P]``; additive ``mask
        [B, 1, T, P + T]``. Returns the new ``x``, the next conv cache and this call's keys and values."""
        s1, b1, s2, b2, s3, b3 = self.modulation(cond)[:, None].chunk(6, dim=-1)
        h = self.conv_norm(x) * (1 + s1) + b1
        h, conv_next = self.conv.stream(h.transpose(1, 2), conv_cache)
        x = x + self.conv_out(F.gelu(h.transpose(1, 2)))
        h = self.attn_norm(x) * (1 + s2) + b2
        q, k, v = self.qkv(h).chunk(3, dim=-1)
        keys, values = torch.cat([k_past, k.transpose(1, 2)], -1), torch.cat([v_past, v.transpose(1, 2)], -1)
        x = x + self.attn_out(self._attend(q, keys, values, mask))
        h = self.ffn_norm(x) * (1 + s3) + b3
        return x + self.ffn(h), conv_next, k.transpose(1, 2), v.transpose(1, 2)

    def _attend(self, q: Tensor, keys: Tensor, values: Tensor, mask: Tensor) -> Tensor:
        b, t, d = q.shape
        q = q.view(b, t, self.heads, d // self.heads).transpose(1, 2)
        k = keys.view(b, self.heads, d // self.heads, -1).transpose(2, 3)
        v = values.view(b, self.heads, d // self.heads, -1).transpose(2, 3)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return out.transpose(1, 2).reshape(b, t, d)


def chunk_mask(length: int, chunk: int, left: int, lengths: Tensor) -> Tensor:
    """Offline ``[B, T, T]`` boolean mask: frame i sees frames of its chunk and the ``left`` frames before the
    chunk, among the real ones (and itself, so a padded row is never empty)."""
    i = torch.arange(length, device=lengths.device)
    start = (i // chunk) * chunk
    visible = (i[None, :] < start[:, None] + chunk) & (i[None, :] >= start[:, None] - left)
    real = i[None, None, :] < lengths[:, None, None]
    return (visible[None] & real) | torch.eye(length, dtype=torch.bool, device=lengths.device)[None]


def run_blocks(decoder: nn.Module, h: Tensor, style: Tensor, conv: Tensor, keys: Tensor, values: Tensor,
               mask: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """A flow decoder's blocks (``decoder.blocks``) over ``h [B, T, D]``, then its output head (``out_norm``,
    ``out``): the velocity ``[B, n_mels, T]``, the next conv caches and this pass's keys and values, stacked
    per block. Shared by the TTS and VC decoders."""
    conv_next, new_keys, new_values = [], [], []
    for i, block in enumerate(decoder.blocks):
        h, c, k, v = block(h, style, conv[:, i], keys[:, i], values[:, i], mask)
        conv_next.append(c)
        new_keys.append(k)
        new_values.append(v)
    velocity = decoder.out(decoder.out_norm(h)).transpose(1, 2)
    return velocity, torch.stack(conv_next, 1), torch.stack(new_keys, 1), torch.stack(new_values, 1)


class FlowDecoder(nn.Module):
    """Velocity ``v(x_t, t | cond, speaker)`` over normalised mel ``[B, n_mels, T]``; ``cond [B,
    cond_channels, T]`` is the frame condition, ``mu`` first."""

    def __init__(self, cfg: AcousticConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.dim
        self.null_speaker = len(cfg.voices)  # the unconditional branch of classifier-free guidance
        self.speaker = nn.Embedding(len(cfg.voices) + 1, cfg.cond_dim)
        self.time = nn.Sequential(nn.Linear(cfg.cond_dim, d), nn.SiLU(), nn.Linear(d, cfg.cond_dim))
        self.inp = nn.Linear(2 * cfg.n_mels, d)
        self.frame_in = nn.Linear(cfg.cond_channels - cfg.n_mels, d)
        nn.init.zeros_(self.frame_in.weight)  # starts as a mu-only decoder: a warm start from one is exact
        nn.init.zeros_(self.frame_in.bias)
        self.blocks = nn.ModuleList(DecoderBlock(cfg) for _ in range(cfg.blocks))
        self.out_norm = nn.LayerNorm(d)
        self.out = nn.Linear(d, cfg.n_mels)

    def run(self, x: Tensor, cond: Tensor, t: Tensor, speaker: Tensor, conv: Tensor, keys: Tensor,
            values: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """One pass over ``x [B, n_mels, T]`` and ``cond [B, cond_channels, T]`` with per-block caches
        ``conv [B, blocks, D, K-1]`` and ``keys, values [B, blocks, D, P]`` and the additive ``mask
        [B, 1, T, P + T]``; returns the velocity,
        the next conv caches and this pass's keys and values ``[B, blocks, D, T]``."""
        style = self.time(timestep_embedding(t, self.cfg.cond_dim)) + self.speaker(speaker)
        mu, features = cond[:, : self.cfg.n_mels], cond[:, self.cfg.n_mels :]
        h = self.inp(torch.cat([x, mu], dim=1).transpose(1, 2)) + self.frame_in(features.transpose(1, 2))
        return run_blocks(self, h, style, conv, keys, values, mask)

    def forward(self, x: Tensor, cond: Tensor, t: Tensor, speaker: Tensor, lengths: Tensor, chunk: int) -> Tensor:
        """Offline over whole sequences with the chunk mask of ``chunk`` frames (the parity reference)."""
        b, _, length = x.shape
        d, k = self.cfg.dim, self.cfg.conv_kernel - 1
        zeros = x.new_zeros(b, self.cfg.blocks, d, k)
        empty = x.new_zeros(b, self.cfg.blocks, d, 0)
        mask = additive_mask(chunk_mask(length, chunk, self.cfg.left_context, lengths)[:, None], x.dtype)
        return self.run(x, cond, t, speaker, zeros, empty, empty, mask)[0]


class NormalisedMel:
    """A model whose flow runs on mel normalised by its config's ``mel_mean`` and ``mel_std``."""

    cfg: AcousticConfig

    def normalise(self, mel: Tensor) -> Tensor:
        return (mel - self.cfg.mel_mean) / self.cfg.mel_std

    def denormalise(self, mel: Tensor) -> Tensor:
        return mel * self.cfg.mel_std + self.cfg.mel_mean


class AcousticModel(NormalisedMel, nn.Module):
    def __init__(self, cfg: AcousticConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = TextEncoder(cfg)
        self.decoder = FlowDecoder(cfg)

    def losses(self, ids: Tensor, n_phonemes: Tensor, mel: Tensor, n_frames: Tensor, speaker: Tensor,
               chunk: int) -> dict[str, Tensor]:
        """Training: duration, prior and flow-matching losses of a padded batch (``mel`` natural-log)."""
        bounds = torch.stack([torch.zeros_like(n_phonemes), n_phonemes], dim=1)
        phonemes, log_durations = self.encoder(ids, speaker, bounds)
        mu = phonemes[:, : self.cfg.n_mels]
        y = self.normalise(mel)
        frame_mask = sequence_mask(torch.stack([torch.zeros_like(n_frames), n_frames], 1), y.shape[-1])
        y = y * frame_mask
        mu32 = mu.float()
        log_p = (2 * torch.einsum("bcn,bct->bnt", mu32, y.float()) - (mu32**2).sum(1)[:, :, None]
                 - (y.float() ** 2).sum(1)[:, None, :]) * 0.5
        path = monotonic_alignment(log_p, n_phonemes, n_frames)
        durations = path.sum(-1)
        phoneme_mask = sequence_mask(bounds, ids.shape[1])[:, 0]
        target = torch.log(durations.clamp(min=1)) * phoneme_mask
        duration_loss = ((log_durations.float() - target) ** 2).sum() / phoneme_mask.sum()
        frames = torch.einsum("bcn,bnt->bct", phonemes.float(), path)
        mu_frames = frames[:, : self.cfg.n_mels]
        prior_loss = (0.5 * ((y - mu_frames) ** 2 + math.log(2 * math.pi)) * frame_mask).sum() / (
            frame_mask.sum() * self.cfg.n_mels)
        positions = position_features(durations.long(), path.argmax(1))
        cond = torch.cat([mu_frames.detach(), frames[:, self.cfg.n_mels :], positions], 1) * frame_mask
        flow_loss = self.flow_loss(y, cond, speaker, n_frames, frame_mask, chunk)
        return {"duration": duration_loss, "prior": prior_loss, "flow": flow_loss}

    def flow_loss(self, y: Tensor, cond: Tensor, speaker: Tensor, n_frames: Tensor, frame_mask: Tensor,
                  chunk: int) -> Tensor:
        b = y.shape[0]
        t = 1 - torch.cos(torch.rand(b, device=y.device) * math.pi / 2)  # the cosine schedule of inference
        x0 = torch.randn_like(y)
        sigma = self.cfg.sigma_min
        x_t = (1 - (1 - sigma) * t[:, None, None]) * x0 + t[:, None, None] * y
        target = y - (1 - sigma) * x0
        drop = torch.rand(b, device=y.device) < self.cfg.condition_dropout
        cond_in = torch.where(drop[:, None, None], torch.zeros_like(cond), cond)
        speaker_in = torch.where(drop, torch.full_like(speaker, self.decoder.null_speaker), speaker)
        velocity = self.decoder(x_t, cond_in, t, speaker_in, n_frames, chunk)
        return (((velocity.float() - target) ** 2) * frame_mask).sum() / (frame_mask.sum() * self.cfg.n_mels)


def write_weights(model: nn.Module, config: dict, directory: str | Path) -> None:
    """A trained model directory: ``model.safetensors`` (fp16, as shipped) and ``config.json``."""
    from safetensors.torch import save_file

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / "model.safetensors"))
    (out / "config.json").write_text(json.dumps(config, indent=1) + "\n")


def read_weights(directory: str | Path) -> dict[str, Tensor]:
    """A trained model directory's ``model.safetensors`` (fp16), as fp32 tensors."""
    from safetensors.torch import load_file

    return {k: v.float() for k, v in load_file(str(Path(directory) / "model.safetensors")).items()}


def load_acoustic(directory: str | Path) -> AcousticModel:
    """A trained model directory (``config.json`` + ``model.safetensors``, fp16), as fp32 for inference."""
    cfg = AcousticConfig.from_dict(json.loads((Path(directory) / "config.json").read_text()))
    model = AcousticModel(cfg)
    model.load_state_dict(read_weights(directory))
    return model.eval()
