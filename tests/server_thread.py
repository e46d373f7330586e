"""`speech serve` for tests: on a thread of its own, for tests whose client side runs blocking code (the CLI's
main), or in the test's own event loop (``run_served``), with ``expect`` reading the next control message."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from speech.server import SpeechServer
from speech.server_config import load_server_config


@contextlib.contextmanager
def served(models: list[dict]) -> Iterator[str]:
    """A server of ``models`` on a free port; yields its WebSocket URL and stops it afterwards."""
    ready, holder = threading.Event(), {}

    def serve() -> None:
        async def body() -> None:
            async with SpeechServer(load_server_config(None, port=0, models=models)) as server:
                holder["url"], holder["stop"] = server.ws_url, asyncio.Event()
                holder["loop"] = asyncio.get_running_loop()
                ready.set()
                await holder["stop"].wait()

        asyncio.run(body())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert ready.wait(60), "the server did not start"
    try:
        yield holder["url"]
    finally:
        holder["loop"].call_soon_threadsafe(holder["stop"].set)
        thread.join(30)


def run_served(body: Callable[[str], Awaitable[Any]], models: list[dict]) -> Any:
    """``body(ws_url)`` against a server of ``models`` in this thread's event loop; its result."""
    async def main():
        async with SpeechServer(load_server_config(None, port=0, models=models)) as server:
            return await body(server.ws_url)
    return asyncio.run(main())


async def expect(ws, kind: str, code: str | None = None, timeout: float = 60) -> dict:
    """The next control message (audio frames before it are skipped), which must be of ``kind`` (and ``code``)."""
    while True:
        message = await asyncio.wait_for(ws.recv(), timeout)
        if isinstance(message, str):
            reply = json.loads(message)
            assert reply["type"] == kind and (code is None or reply.get("code") == code), reply
            return reply
