"""One training step's worth of model code: SpecAugment and the hybrid CTC/RNNT loss on a padded batch."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .config import Context
from .losses import ctc_loss, rnnt_loss
from .model import FastConformer


@dataclass(frozen=True)
class SpecAugment:
    """NeMo's streaming-config defaults: 2 frequency masks of up to 27 bins, 10 time masks of up to 5%."""

    freq_masks: int = 2
    freq_width: int = 27
    time_masks: int = 10
    time_width: float = 0.05

    def __call__(self, mel: Tensor, frames: Tensor, generator: torch.Generator | None = None) -> Tensor:
        batch, bins, length = mel.shape
        keep = torch.ones_like(mel, dtype=torch.bool)
        f_axis = torch.arange(bins, device=mel.device)[None, :]
        t_axis = torch.arange(length, device=mel.device)[None, :]
        for _ in range(self.freq_masks):
            width = torch.randint(0, self.freq_width + 1, (batch, 1), generator=generator).to(mel.device)
            start = (torch.rand(batch, 1, generator=generator).to(mel.device) * (bins - width)).long()
            keep &= ~((f_axis >= start) & (f_axis < start + width))[:, :, None]
        max_width = (frames.float() * self.time_width).long().clamp(min=1)[:, None]
        for _ in range(self.time_masks):
            width = (torch.rand(batch, 1, generator=generator).to(mel.device) * (max_width + 1)).long()
            start = (torch.rand(batch, 1, generator=generator).to(mel.device) * (frames[:, None] - width).clamp(min=1)).long()
            keep &= ~((t_axis >= start) & (t_axis < start + width))[:, None, :]
        return mel * keep


def hybrid_loss(model: FastConformer, mel: Tensor, frames: Tensor, targets: Tensor, target_lengths: Tensor,
                ctc_weight: float, spec_augment: SpecAugment | None = None, context: Context | None = None) -> dict[str, Tensor]:
    """Mean per-utterance losses (``loss``, ``rnnt``, ``ctc``) of log-mel ``[B, feat, N]`` with ``frames``
    valid; one attention context for the batch (sampled when None)."""
    mel = mel.float()
    if spec_augment is not None:
        mel = spec_augment(mel, frames)
    encoded, enc_lengths = model.encoder(mel, frames, context)
    encoded = encoded[:, : int(enc_lengths.max())]  # the transducer loss wants the longest length as T
    blank = model.cfg.heads.blank
    out: dict[str, Tensor] = {}
    if model.ctc is not None:
        out["ctc"] = (ctc_loss(model.ctc(encoded), targets, enc_lengths, target_lengths, blank)
                      / target_lengths.clamp(min=1)).mean()
    if model.transducer is not None:
        predicted = model.transducer.predict(targets)
        logits = model.transducer.joint_all(encoded, predicted)
        out["rnnt"] = (rnnt_loss(logits, targets, enc_lengths, target_lengths, blank)
                       / target_lengths.clamp(min=1)).mean()
    if "ctc" in out and "rnnt" in out:
        out["loss"] = (1 - ctc_weight) * out["rnnt"] + ctc_weight * out["ctc"]
    else:
        out["loss"] = next(iter(out.values()))
    return out
