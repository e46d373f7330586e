"""Monotonic alignment search (Glow-TTS): the most likely monotonic, non-skipping phoneme-to-frame path.

On CUDA with Triton (which ships with CUDA builds of torch) it runs as one kernel
(``alignment_triton``); elsewhere as a torch loop over frames, vectorised over the batch and the phonemes,
which costs about a dozen small kernels per frame on a GPU.
"""

from __future__ import annotations

import importlib.util

import torch
from torch import Tensor

HAS_TRITON = importlib.util.find_spec("triton") is not None


@torch.no_grad()
def monotonic_alignment(log_p: Tensor, n_phonemes: Tensor, n_frames: Tensor) -> Tensor:
    """``log_p [B, N, T]`` (log-likelihood of frame t under phoneme n) -> hard path ``[B, N, T]`` (0/1).

    Every frame belongs to one phoneme, phonemes appear in order, each for at least one frame; frame 0 is
    phoneme 0 and the last frame the last phoneme. Needs ``n_frames >= n_phonemes`` per item."""
    if log_p.is_cuda and HAS_TRITON:
        from .alignment_triton import monotonic_alignment_triton

        return monotonic_alignment_triton(log_p, n_phonemes, n_frames)
    return monotonic_alignment_loop(log_p, n_phonemes, n_frames)


@torch.no_grad()
def monotonic_alignment_loop(log_p: Tensor, n_phonemes: Tensor, n_frames: Tensor) -> Tensor:
    """``monotonic_alignment`` as a torch loop over frames (any device; the reference of the kernel)."""
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
