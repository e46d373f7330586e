"""Monotonic alignment search (Glow-TTS): the most likely monotonic, non-skipping phoneme-to-frame path.

Vectorised over the batch and the phonemes, looping over frames, so it runs on the GPU without a compiled
extension; it costs about two small kernels per frame, forward and back.
"""

from __future__ import annotations

import torch
from torch import Tensor


@torch.no_grad()
def monotonic_alignment(log_p: Tensor, n_phonemes: Tensor, n_frames: Tensor) -> Tensor:
    """``log_p [B, N, T]`` (log-likelihood of frame t under phoneme n) -> hard path ``[B, N, T]`` (0/1).

    Every frame belongs to one phoneme, phonemes appear in order, each for at least one frame; frame 0 is
    phoneme 0 and the last frame the last phoneme. Needs ``n_frames >= n_phonemes`` per item."""
    batch, n_max, t_max = log_p.shape
    device = log_p.device
    neg = torch.finfo(log_p.dtype).min / 4
    phoneme = torch.arange(n_max, device=device)
    log_p = log_p.masked_fill(phoneme[None, :, None] >= n_phonemes[:, None, None], neg)
    value = torch.full((batch, n_max), neg, device=device, dtype=log_p.dtype)
    value[:, 0] = log_p[:, 0, 0]
    moved = torch.zeros(batch, n_max, t_max, dtype=torch.bool, device=device)
    for t in range(1, t_max):
        from_previous = torch.cat([torch.full_like(value[:, :1], neg), value[:, :-1]], dim=1)
        move = from_previous > value
        moved[:, :, t] = move
        updated = torch.where(move, from_previous, value) + log_p[:, :, t]
        value = torch.where((t < n_frames)[:, None], updated, value)
    path = torch.zeros(batch, n_max, t_max, dtype=log_p.dtype, device=device)
    index = (n_phonemes - 1).clamp(min=0)
    rows = torch.arange(batch, device=device)
    for t in range(t_max - 1, -1, -1):
        active = t < n_frames
        path[rows, index, t] = active.to(path.dtype)
        step_back = active & moved[rows, index, t] & (index > 0)
        index = index - step_back.long()
    return path
