"""What a live recognition session on the chunk scheduler offers, whichever model runs it; the server,
the microphone CLI and ``transcribe_many`` drive sessions only through this."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from .hypothesis import Hypothesis


class LiveSession(Protocol):
    """``feed`` audio pieces of any length at the model's rate, ``finish`` once at the end, then ``close``;
    ``cancel`` drops the session at once. ``deadline`` (``loop.time()`` seconds) tells the scheduler by when
    the chunks of a piece are needed. ``chunks`` counts the model chunks run so far."""

    chunks: int

    async def feed(self, audio: np.ndarray, deadline: float | None = None) -> list[Hypothesis]: ...

    async def finish(self, deadline: float | None = None) -> list[Hypothesis]: ...

    async def close(self) -> None: ...

    def cancel(self) -> None: ...


async def stream_in_pieces(session: LiveSession, audio: np.ndarray, piece: int) -> list[Hypothesis]:
    """A whole signal through ``session`` in pieces of ``piece`` samples, as live audio would arrive; closes it."""
    try:
        events: list[Hypothesis] = []
        for start in range(0, len(audio), piece):
            events += await session.feed(audio[start : start + piece])
        return events + await session.finish()
    finally:
        await session.close()
