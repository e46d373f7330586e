"""Fakes at the sounddevice boundary (this machine has no sound card): a microphone that plays a signal
through PortAudio's callback from its own thread, and a speaker that records what is written to it."""

from __future__ import annotations

import threading
import time
from typing import ClassVar

import numpy as np


class FakeInputStream:
    """Plays ``SIGNAL`` through the callback in blocks from its own thread, as PortAudio would, then finishes."""

    SIGNAL = np.zeros(0, np.float32)

    def __init__(self, *, device, channels, samplerate, dtype, blocksize, callback, finished_callback) -> None:
        assert (device, channels, dtype) == (3, 1, "float32")
        self.samplerate, self.blocksize = samplerate, blocksize
        self.callback, self.finished = callback, finished_callback
        self.thread = threading.Thread(target=self._play, daemon=True)
        self.stopped = threading.Event()

    def _play(self) -> None:
        for at in range(0, len(self.SIGNAL), self.blocksize):
            if self.stopped.is_set():
                return
            block = self.SIGNAL[at : at + self.blocksize]
            self.callback(block[:, None].copy(), len(block), None, None)
            time.sleep(0.002)  # faster than real time: the session must keep every block in order
        self.finished()

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopped.set()

    def close(self) -> None:
        self.thread.join(timeout=5)


DEVICES = [{"name": "HDA Intel PCH: HDMI 0", "max_input_channels": 0, "default_samplerate": 44100.0}] * 3 + [
    {"name": "USB Microphone", "max_input_channels": 1, "default_samplerate": 16000.0}]


class FakeOutputStream:
    played: ClassVar[list[np.ndarray]] = []
    rates: ClassVar[list[int]] = []  # of every stream opened

    def __init__(self, *, samplerate, channels, dtype) -> None:
        assert (channels, dtype) == (1, "float32")
        FakeOutputStream.rates.append(samplerate)

    def start(self) -> None: ...

    def write(self, block: np.ndarray) -> None:
        assert block.ndim == 2 and block.shape[1] == 1
        FakeOutputStream.played.append(block[:, 0].copy())

    def stop(self) -> None: ...

    def close(self) -> None: ...
