"""Hybrid CTC/RNNT training loss; the RNNT loss is torchaudio's where it exists (the GPU image), else ours.

Ours is the exact transducer forward algorithm vectorised over the label axis: each time step is one
``logcumsumexp`` over labels, so autograd gives the gradient and it runs on any device.
"""

from __future__ import annotations

import importlib

import torch
import torch.nn.functional as F
from torch import Tensor


def rnnt_loss_reference(logits: Tensor, targets: Tensor, logit_lengths: Tensor, target_lengths: Tensor, blank: int) -> Tensor:
    """Per-utterance negative log-likelihood; ``logits [B, T, U + 1, V]``, ``targets [B, U]``."""
    log_probs = F.log_softmax(logits.float(), dim=-1)
    batch, frames, labels1, _ = log_probs.shape
    blank_lp = log_probs[..., blank]  # [B, T, U + 1]
    emit_lp = log_probs[:, :, :-1].gather(-1, targets[:, None, :, None].expand(batch, frames, labels1 - 1, 1))[..., 0]
    cumulative = F.pad(emit_lp.cumsum(dim=-1), (1, 0))  # [B, T, U + 1]: sum of emissions before label u
    alpha = cumulative[:, 0]
    alphas = [alpha]
    for t in range(1, frames):
        alpha = cumulative[:, t] + torch.logcumsumexp(alpha + blank_lp[:, t - 1] - cumulative[:, t], dim=-1)
        alphas.append(alpha)
    stacked = torch.stack(alphas, dim=1)  # [B, T, U + 1]
    index = torch.arange(batch, device=logits.device)
    last_t, last_u = logit_lengths - 1, target_lengths
    return -(stacked[index, last_t, last_u] + blank_lp[index, last_t, last_u])


def rnnt_loss(logits: Tensor, targets: Tensor, logit_lengths: Tensor, target_lengths: Tensor, blank: int) -> Tensor:
    try:  # training only, on the GPU image: torchaudio does not load with this machine's CPU torch
        taf = importlib.import_module("torchaudio.functional")
    except (ImportError, OSError):
        return rnnt_loss_reference(logits, targets, logit_lengths, target_lengths, blank)
    return taf.rnnt_loss(logits.float(), targets.int(), logit_lengths.int(), target_lengths.int(), blank=blank,
                         reduction="none")


def ctc_loss(log_probs: Tensor, targets: Tensor, logit_lengths: Tensor, target_lengths: Tensor, blank: int) -> Tensor:
    return F.ctc_loss(log_probs.transpose(0, 1).float(), targets, logit_lengths, target_lengths, blank=blank,
                      reduction="none", zero_infinity=True)
