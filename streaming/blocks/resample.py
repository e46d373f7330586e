"""Streaming resampling with soxr: chunked output equals one-shot ``soxr.resample``.

soxr keeps its filter history in an opaque native object, so this is host-side logic (numpy in, numpy
out) rather than an exportable step; it runs before the first lane of a session.
"""

from __future__ import annotations

import numpy as np


class StreamingResampler:
    """Resample float32 mono audio chunk by chunk; call with ``last=True`` once to flush the tail."""

    def __init__(self, in_rate: int, out_rate: int, *, quality: str = "HQ") -> None:
        if in_rate <= 0 or out_rate <= 0:
            raise ValueError(f"sample rates must be positive, got {in_rate} -> {out_rate}")
        self.in_rate, self.out_rate = in_rate, out_rate
        self._passthrough = in_rate == out_rate
        import soxr  # imported here: training machines import streaming.blocks without it

        self._stream = None if self._passthrough else soxr.ResampleStream(in_rate, out_rate, 1, "float32", quality)

    def process(self, chunk: np.ndarray, last: bool = False) -> np.ndarray:
        chunk = np.ascontiguousarray(chunk, dtype=np.float32)
        if chunk.ndim != 1:
            raise ValueError(f"expected mono audio [samples], got shape {chunk.shape}")
        if self._passthrough:
            return chunk.copy()
        return self._stream.resample_chunk(chunk, last=last)
