"""Voice activity from Silero VAD (the ONNX model inside PyPI ``silero-vad``), with explicit per-stream state.

One onnxruntime session serves every stream; a stream's state is the model's recurrent state, the last
64 samples of context and the samples not yet making a whole 32 ms window.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from streaming.backend import packaged_onnx_session

WINDOW = 512  # samples at 16 kHz: 32 ms
CONTEXT = 64


@dataclass
class VADState:
    recurrent: np.ndarray = field(default_factory=lambda: np.zeros((2, 1, 128), np.float32))
    context: np.ndarray = field(default_factory=lambda: np.zeros((1, CONTEXT), np.float32))
    pending: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))


@lru_cache(maxsize=1)
def _session():
    return packaged_onnx_session("silero_vad", "data/silero_vad.onnx", "voice activity", "whisper")


def speech_probabilities(audio: np.ndarray, state: VADState) -> list[float]:
    """Speech probability of every whole 32 ms window now available (16 kHz audio); updates ``state``."""
    samples = np.concatenate([state.pending, np.asarray(audio, np.float32)])
    whole = len(samples) // WINDOW * WINDOW
    state.pending = samples[whole:]
    probs = []
    for start in range(0, whole, WINDOW):
        x = np.concatenate([state.context, samples[None, start : start + WINDOW]], axis=1)
        out, state.recurrent = _session().run(None, {"input": x, "state": state.recurrent,
                                                     "sr": np.array(16000, np.int64)})
        state.context = x[:, -CONTEXT:]
        probs.append(float(out[0, 0]))
    return probs
