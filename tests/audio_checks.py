"""Checks on generated audio shared by the vocoder and TTS tests."""

from __future__ import annotations

import numpy as np
import torch


def spectral_flux(audio: np.ndarray, frame: int = 256) -> np.ndarray:
    """Spectral flux: ``flux[i]`` is the rise in magnitude spectrum from frame ``i`` to ``i + 1``."""
    frames = torch.from_numpy(np.ascontiguousarray(audio[: len(audio) // frame * frame])).view(-1, frame)
    spectra = torch.fft.rfft(frames * torch.hann_window(frame), dim=-1).abs()
    return torch.relu(spectra[1:] - spectra[:-1]).sum(-1).numpy()
