"""WebSocket keep-alive that a peer which is alive but behind cannot fail.

A pong travels in the same TCP stream as the data. When one side stops reading because its bounded queue is
full (backpressure: a client sending faster than the models run), the other side's pong, or its answer to our
ping, waits behind megabytes of audio, and the ``websockets`` library's own keep-alive drops a connection
that is doing exactly what it should. Here a missing pong only counts when nothing else moved either: no
message read or handled, and no message sent, since the ping went out.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from websockets.asyncio.connection import Connection
from websockets.exceptions import ConnectionClosed

KEEPALIVE_TIMEOUT = 1011, "keepalive ping timeout"


async def keep_alive(ws: Connection, interval_s: float, timeout_s: float, progress: Callable[[], int]) -> None:
    """Ping every ``interval_s``; close with 1011 when a pong is ``timeout_s`` late and ``progress()`` (a counter
    of the connection's traffic) has not moved meanwhile. Returns when the connection closes."""
    with contextlib.suppress(ConnectionClosed):
        while True:
            await asyncio.sleep(interval_s)
            before = progress()
            pong = await ws.ping()
            try:
                await asyncio.wait_for(asyncio.shield(pong), timeout_s)
            except TimeoutError:
                if progress() == before:
                    await ws.close(*KEEPALIVE_TIMEOUT)
                    return
