"""A Python client of `speech serve` (``speech.protocol``), used by ``speech transcribe --server``,
``speech mic --server``, the benchmark and the tests.

    async with await SpeechClient.connect("ws://127.0.0.1:8765") as client:
        ready = await client.start(sample_rate=16000)
        messages = await client.stream(audio)      # sends while receiving; ends at "done"
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any, Self
from urllib.parse import urlsplit, urlunsplit

import numpy as np
from websockets.asyncio.client import ClientConnection, connect

from asr.hypothesis import Hypothesis

from .keepalive import keep_alive
from .protocol import encode_audio, hypothesis_from_message


class ServerError(RuntimeError):
    """A structured error from the server (``code``, ``message``)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code, self.message = code, message


def session_url(url: str) -> str:
    """``ws://host:port`` (or ``http://``) -> the WebSocket endpoint ``ws://host:port/ws``."""
    parts = urlsplit(url if "://" in url else f"ws://{url}")
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    if scheme not in ("ws", "wss"):
        raise ValueError(f"a server URL looks like ws://HOST:PORT, got {url!r}")
    return urlunsplit((scheme, parts.netloc, parts.path if parts.path not in ("", "/") else "/ws", parts.query, ""))


class SpeechClient:
    """One connection; its keep-alive (``speech.keepalive``) does not drop a server that is busy reading the
    audio we sent ahead."""

    def __init__(self, ws: ClientConnection, ping_interval_s: float = 20.0, ping_timeout_s: float = 20.0) -> None:
        self.ws = ws
        self.encoding = "pcm_s16le"
        self.traffic = 0  # messages sent and received
        self._pinger = asyncio.create_task(keep_alive(ws, ping_interval_s, ping_timeout_s, lambda: self.traffic))

    @classmethod
    async def connect(cls, url: str, *, token: str | None = None, open_timeout: float = 10,
                      ping_interval_s: float = 20.0, ping_timeout_s: float = 20.0) -> SpeechClient:
        headers = {"Authorization": f"Bearer {token}"} if token else None
        ws = await connect(session_url(url), additional_headers=headers, compression=None, max_size=2**24,
                           open_timeout=open_timeout, ping_interval=None)
        return cls(ws, ping_interval_s, ping_timeout_s)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        self._pinger.cancel()
        await self.ws.close()

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(message))
        self.traffic += 1

    async def receive(self) -> dict[str, Any]:
        """The next control message (binary audio frames come back as ``{"type": "audio", "data": bytes}``)."""
        data = await self.ws.recv()
        self.traffic += 1
        return {"type": "audio", "data": data} if isinstance(data, bytes) else json.loads(data)

    async def start(self, task: str = "asr", *, sample_rate: int, model: str | None = None,
                    encoding: str = "pcm_s16le", partials: bool = True, **options: float) -> dict[str, Any]:
        """Opens a session; returns the server's ``ready`` (raises :class:`ServerError` if refused)."""
        message = {"type": "start", "task": task, "sample_rate": sample_rate, "encoding": encoding,
                   "partials": partials, **({"model": model} if model else {}),
                   **{k: v for k, v in options.items() if v is not None}}
        await self.send(message)
        reply = await self.receive()
        if reply["type"] == "error":
            raise ServerError(reply["code"], reply["message"])
        self.encoding = encoding
        return reply

    async def send_reference(self, reference: np.ndarray, sample_rate: int, frame_s: float = 0.25) -> dict[str, Any]:
        """A VC session's reference recording (at the session's rate), then ``reference_end``; returns the
        server's ``voice_ready`` (raises :class:`ServerError` if the reference is refused)."""
        frame = max(1, round(frame_s * sample_rate))
        for at in range(0, len(reference), frame):
            await self.send_audio(reference[at : at + frame])
        await self.send({"type": "reference_end"})
        reply = await self.receive()
        if reply["type"] == "error":
            raise ServerError(reply["code"], reply["message"])
        return reply

    async def send_audio(self, samples: np.ndarray) -> None:
        await self.ws.send(encode_audio(samples, self.encoding))
        self.traffic += 1

    async def stream(self, audio: np.ndarray, sample_rate: int, *, frame_s: float = 0.1, realtime: bool = False,
                     on_message: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
        """Sends ``audio`` in ``frame_s`` frames (at the pace of real time if ``realtime``), then ``end``, while
        receiving; returns every message up to and including ``done``."""
        frame = max(1, round(frame_s * sample_rate))

        async def send_all() -> None:
            loop = asyncio.get_running_loop()
            start = loop.time()
            for i, at in enumerate(range(0, len(audio), frame)):
                if realtime:
                    await asyncio.sleep(max(0.0, start + i * frame_s - loop.time()))
                await self.send_audio(audio[at : at + frame])
            await self.send({"type": "end"})

        sender = asyncio.create_task(send_all())
        messages: list[dict[str, Any]] = []
        try:
            while True:
                message = await self.receive()
                messages.append(message)
                if on_message:
                    on_message(message)
                if message["type"] == "error":
                    raise ServerError(message["code"], message["message"])
                if message["type"] == "done":
                    await sender
                    return messages
        finally:
            sender.cancel()


def hypotheses(messages: list[dict[str, Any]]) -> list[Hypothesis]:
    """The partial and final transcripts among a session's messages, as the in-process recogniser gives them."""
    return [hypothesis_from_message(m) for m in messages if m["type"] in ("partial", "final")]


async def transcribe_remote(url: str, audios: list[np.ndarray], sample_rate: int, *, model: str | None = None,
                            token: str | None = None, concurrency: int = 16, frame_s: float = 0.1,
                            **options: float) -> list[list[Hypothesis]]:
    """Every signal as its own session (its own connection), ``concurrency`` at a time."""
    gate = asyncio.Semaphore(concurrency)

    async def one(audio: np.ndarray) -> list[Hypothesis]:
        async with gate, await SpeechClient.connect(url, token=token) as client:
            await client.start(sample_rate=sample_rate, model=model, **options)
            return hypotheses(await client.stream(audio, sample_rate, frame_s=frame_s))

    return list(await asyncio.gather(*(one(a) for a in audios)))
