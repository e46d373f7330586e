"""Whole-signal transcription: plain Whisper (full attention, the upper bound), or the causal model's
offline form (causal features, the block-causal mask of its chunk size) over 30 s windows."""

from __future__ import annotations

import numpy as np
import torch

from ..hypothesis import Hypothesis
from .features import WINDOW_SAMPLES, causal_features, offline_features
from .model import CausalWhisper


@torch.inference_mode()
def transcribe_offline(model: CausalWhisper, audio: np.ndarray, chunk_frames: int | None = None) -> Hypothesis:
    """Greedy text of each 30 s window in turn (no timestamps, so no word times), as one final hypothesis.

    ``chunk_frames``: None is plain Whisper; a chunk size runs the causal encoder under its block mask."""
    weight = next(model.parameters())
    tokens: list[int] = []
    for start in range(0, max(1, len(audio)), WINDOW_SAMPLES):
        window = torch.from_numpy(np.ascontiguousarray(audio[start : start + WINDOW_SAMPLES], dtype=np.float32))
        window = window[None].to(weight.device)
        features = offline_features(window) if chunk_frames is None else causal_features(window)
        tokens += model.greedy(model.encoder(features.to(weight.dtype), chunk_frames))[0]
    return Hypothesis(model.tokens.decode(tokens), (), True, 0, tuple(tokens))
