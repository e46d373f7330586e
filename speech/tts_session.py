"""One client's TTS session, transport-free: text in (as it arrives), audio frames out.

Text goes through a scheduled synthesis (flow and vocoder lanes shared with every other session), the audio
is resampled (streaming) to the rate the client asked for and encoded in its encoding, and sent as binary
frames. Text is taken at once and spoken by the session's speaker task, so a client may send text faster
than it is spoken (an LLM's tokens) while the connection keeps reading: pings are answered and a cancel
interrupts at once. ``end`` waits for the text already sent, flushes what it held back and closes with
``done``; a cancel drops the session at once (the interrupt)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
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
        self.backlog: asyncio.Queue[str | None] = asyncio.Queue()  # text not yet spoken; None: the end
        self.speaker: asyncio.Task | None = None

    def ready_message(self) -> dict[str, Any]:
        return {"type": "ready", "protocol": PROTOCOL_VERSION, "session": self.id, "task": "tts",
                "model": self.engine.name, "voice": self.settings["voice"], "input": "text",
                "output": {"sample_rate": self.rate, "encoding": self.request.encoding},
                "model_sample_rate": self.engine.sample_rate, "chunk_ms": self.settings["chunk_ms"],
                "lookahead_ms": 0.0, "partials": False}

    def text(self, text: str, send: Callable[[bytes], Awaitable[None]]) -> None:
        """Text as it arrives (words, tokens, characters), queued for the speaker task, which sends each
        audio frame through ``send`` as it is made. Raises what stopped the speaker, if it failed."""
        if self.speaker is not None and self.speaker.done() and not self.speaker.cancelled():
            self.speaker.result()  # it only ends early by failing
        self.chars_in += len(text)
        self.backlog.put_nowait(text)
        if self.speaker is None:
            self.speaker = asyncio.create_task(self._speak(send))

    async def _speak(self, send: Callable[[bytes], Awaitable[None]]) -> None:
        """Speak the backlog in arrival order, all text that waited during a step in one push."""
        loop, ended = asyncio.get_running_loop(), False
        while not ended:
            pieces = [await self.backlog.get()]
            while not self.backlog.empty():
                pieces.append(self.backlog.get_nowait())
            ended = pieces[-1] is None
            text = "".join(piece for piece in pieces if piece is not None)
            if text:
                for frame in self._frames(await self.live.push(text, loop.time() + self.chunk_s), last=False):
                    await send(frame)

    async def end(self) -> tuple[list[bytes], dict[str, Any]]:
        """The text is complete: once what was sent is spoken, the last audio frames, then ``done``."""
        if self.speaker is not None:
            self.backlog.put_nowait(None)
            await self.speaker
        deadline = asyncio.get_running_loop().time() + self.chunk_s
        frames = self._frames(await self.live.finish(deadline), last=True)
        await self.live.close()
        return frames, {"type": "done", "session": self.id, "text_chars": self.chars_in,
                        "audio_s": round(self.samples_out / self.rate, 3)}

    def cancel(self) -> None:
        if self.speaker is not None:
            self.speaker.cancel()
        self.live.cancel()

    def summary(self) -> dict[str, Any]:
        return {"text_chars": self.chars_in, "audio_s": round(self.samples_out / self.rate, 3)}

    def _frames(self, audio: np.ndarray, last: bool) -> list[bytes]:
        audio = self.resampler.process(audio, last=last)
        self.samples_out += len(audio)
        return [encode_audio(audio, self.request.encoding)] if len(audio) else []
