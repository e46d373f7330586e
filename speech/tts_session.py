"""One client's TTS session, transport-free: text in (as it arrives), audio frames out.

Text goes through a scheduled synthesis (flow and vocoder lanes shared with every other session), the audio
is resampled (streaming) to the rate the client asked for and encoded in its encoding; the server sends each
piece as a binary frame. ``end`` flushes what the text held back and closes with ``done``; a cancel drops
the session at once (the interrupt)."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import numpy as np

from streaming.blocks import StreamingResampler

from .protocol import PROTOCOL_VERSION, StartRequest, encode_audio

_IDS = itertools.count(1)


class TtsSession:
    task = "tts"

    def __init__(self, request: StartRequest, engine, metrics=None) -> None:
        self.id = f"t{next(_IDS)}"
        self.request, self.engine, self.metrics = request, engine, metrics
        self.live, self.settings = engine.open(request.voice, request.options)
        self.rate = request.sample_rate or engine.sample_rate
        self.resampler = StreamingResampler(engine.sample_rate, self.rate)
        self.chunk_s = self.settings["chunk_ms"] / 1000
        self.chars_in = 0
        self.samples_out = 0

    def ready_message(self) -> dict[str, Any]:
        return {"type": "ready", "protocol": PROTOCOL_VERSION, "session": self.id, "task": "tts",
                "model": self.engine.name, "voice": self.settings["voice"], "input": "text",
                "output": {"sample_rate": self.rate, "encoding": self.request.encoding},
                "model_sample_rate": self.engine.sample_rate, "chunk_ms": self.settings["chunk_ms"],
                "lookahead_ms": 0.0, "partials": False}

    async def text(self, text: str) -> list[bytes]:
        """Text as it arrives (words, tokens, characters); the audio frames it completed."""
        self.chars_in += len(text)
        deadline = asyncio.get_running_loop().time() + self.chunk_s
        return self._frames(await self.live.push(text, deadline), last=False)

    async def end(self) -> tuple[list[bytes], dict[str, Any]]:
        """The text is complete: the last audio frames, then ``done``."""
        deadline = asyncio.get_running_loop().time() + self.chunk_s
        frames = self._frames(await self.live.finish(deadline), last=True)
        await self.live.close()
        return frames, {"type": "done", "session": self.id, "text_chars": self.chars_in,
                        "audio_s": round(self.samples_out / self.rate, 3)}

    def cancel(self) -> None:
        self.live.cancel()

    def summary(self) -> dict[str, Any]:
        return {"text_chars": self.chars_in, "audio_s": round(self.samples_out / self.rate, 3)}

    def _frames(self, audio: np.ndarray, last: bool) -> list[bytes]:
        audio = self.resampler.process(audio, last=last)
        self.samples_out += len(audio)
        return [encode_audio(audio, self.request.encoding)] if len(audio) else []
