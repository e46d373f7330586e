"""Real recordings for end-to-end tests (``speech.corpus.real.live_speech``: an4/test from ../shared/data, else
Asterisk digit strings); skips when neither is installed."""

from __future__ import annotations

import numpy as np
import pytest

from speech.corpus.real import live_speech


def real_recordings(count: int) -> list[tuple[str, np.ndarray]]:
    try:
        return live_speech(count)[1]
    except FileNotFoundError as missing:
        pytest.skip(str(missing))
