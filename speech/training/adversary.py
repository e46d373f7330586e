"""HiFi-GAN's discriminators (multi-period and multi-scale) and its least-squares adversarial and
feature-matching losses, for fine-tuning the vocoder student against its teacher's waveforms.

Distillation alone (spectral and waveform losses) leaves a student's speech rough: the losses average over
phase, and what they cannot match comes out as buzz. A discriminator that tells the teacher's waveforms from
the student's, and the feature matching over its layers, push the student to the teacher's fine structure.
Architecture as in the HiFi-GAN paper (Kong et al. 2020, section 2.2/2.3): periods 2, 3, 5, 7, 11; three scales.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm, weight_norm

from tts.hifigan import LRELU_SLOPE

Judgement = tuple[list[Tensor], list[list[Tensor]]]  # per discriminator: its scores, its feature maps


def _layers(convs: nn.ModuleList, post: nn.Module, x: Tensor) -> tuple[Tensor, list[Tensor]]:
    """A judge's convolutions (leaky ReLU after each) and its output layer: ``(scores, every feature map)``."""
    features = []
    for conv in convs:
        x = F.leaky_relu(conv(x), LRELU_SLOPE)
        features.append(x)
    x = post(x)
    features.append(x)
    return x.flatten(1), features


class PeriodDiscriminator(nn.Module):
    """Looks at every ``period``-th sample: the waveform folded to ``[T / period, period]`` and 2-D convolutions
    along time, so periodic structure (pitch, its harmonics) is judged directly."""

    def __init__(self, period: int) -> None:
        super().__init__()
        self.period = period
        widths = (1, 32, 128, 512, 1024)
        self.convs = nn.ModuleList(
            [weight_norm(nn.Conv2d(a, b, (5, 1), (3, 1), padding=(2, 0))) for a, b in itertools.pairwise(widths)]
            + [weight_norm(nn.Conv2d(1024, 1024, (5, 1), 1, padding=(2, 0)))])
        self.post = weight_norm(nn.Conv2d(1024, 1, (3, 1), 1, padding=(1, 0)))

    def forward(self, audio: Tensor) -> tuple[Tensor, list[Tensor]]:
        x = audio[:, None]
        pad = -x.shape[-1] % self.period
        x = F.pad(x, (0, pad), mode="reflect")
        return _layers(self.convs, self.post, x.view(x.shape[0], 1, -1, self.period))


class ScaleDiscriminator(nn.Module):
    """Strided grouped 1-D convolutions over the waveform at one time scale."""

    def __init__(self, norm: Callable[[nn.Module], nn.Module] = weight_norm) -> None:
        super().__init__()
        layers = [(1, 128, 15, 1, 1), (128, 128, 41, 2, 4), (128, 256, 41, 2, 16), (256, 512, 41, 4, 16),
                  (512, 1024, 41, 4, 16), (1024, 1024, 41, 1, 16), (1024, 1024, 5, 1, 1)]
        self.convs = nn.ModuleList([norm(nn.Conv1d(a, b, k, s, groups=g, padding=k // 2)) for a, b, k, s, g in layers])
        self.post = norm(nn.Conv1d(1024, 1, 3, 1, padding=1))

    def forward(self, audio: Tensor) -> tuple[Tensor, list[Tensor]]:
        return _layers(self.convs, self.post, audio[:, None])


class Discriminators(nn.Module):
    """All eight judges: five periods and three scales (raw, x1/2, x1/4; the raw one spectrally normalised)."""

    def __init__(self, periods: tuple[int, ...] = (2, 3, 5, 7, 11)) -> None:
        super().__init__()
        self.periods = nn.ModuleList([PeriodDiscriminator(p) for p in periods])
        self.scales = nn.ModuleList([ScaleDiscriminator(spectral_norm), ScaleDiscriminator(), ScaleDiscriminator()])
        self.pool = nn.AvgPool1d(4, 2, padding=2)

    def forward(self, audio: Tensor) -> Judgement:
        scores, features = [], []
        for judge in self.periods:
            score, maps = judge(audio)
            scores.append(score)
            features.append(maps)
        x = audio
        for i, judge in enumerate(self.scales):
            if i:
                x = self.pool(x[:, None])[:, 0]
            score, maps = judge(x)
            scores.append(score)
            features.append(maps)
        return scores, features


def discriminator_loss(real: list[Tensor], fake: list[Tensor]) -> Tensor:
    """Least squares: real scores toward 1, fake toward 0."""
    return sum((((1 - r) ** 2).mean() + (f**2).mean() for r, f in zip(real, fake, strict=True)), real[0].new_zeros(()))


def generator_loss(fake: list[Tensor]) -> Tensor:
    """Least squares: the student's scores toward 1 (judged real)."""
    return sum((((1 - f) ** 2).mean() for f in fake), fake[0].new_zeros(()))


def feature_matching_loss(real: list[list[Tensor]], fake: list[list[Tensor]]) -> Tensor:
    """L1 between the judges' feature maps of the teacher's and the student's waveforms."""
    return sum(F.l1_loss(f, r.detach()) for rs, fs in zip(real, fake) for r, f in zip(rs, fs))
