"""Plain Whisper (full attention over 30 s windows), the offline upper bound of the causal model."""

from __future__ import annotations

import numpy as np
import torch

from ..hypothesis import Hypothesis
from .features import WINDOW_SAMPLES, offline_features
from .model import CausalWhisper


@torch.inference_mode()
def transcribe_offline(model: CausalWhisper, audio: np.ndarray) -> Hypothesis:
    """Greedy text of each 30 s window in turn (no timestamps, so no word times), as one final hypothesis."""
    tokens: list[int] = []
    for start in range(0, max(1, len(audio)), WINDOW_SAMPLES):
        window = torch.from_numpy(np.ascontiguousarray(audio[start : start + WINDOW_SAMPLES], dtype=np.float32))
        tokens += model.greedy(model.encoder(offline_features(window[None])))[0]
    return Hypothesis(model.tokens.decode(tokens), (), True, 0, tuple(tokens))
