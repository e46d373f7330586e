"""`speech serve` on a thread of its own, for tests whose client side runs blocking code (the CLI's main)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator

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
