"""`speech serve`: the WebSocket audio service on the ``websockets`` library.

HTTP routes: ``/`` (the web page), ``/healthz``, ``/readyz`` (503 while loading, draining or at capacity),
``/metrics`` (Prometheus), ``/v1/models``, and ``/ws``, the WebSocket endpoint (``speech.protocol``).

Each connection has a reader task and a worker: the reader takes frames off the socket into a bounded queue
(``queue_frames``); when the queue is full it stops reading, TCP fills up and the client's sends block, so a
client that sends faster than the models run is slowed down instead of growing memory. The worker runs the
session. Errors are structured messages; a fatal one (the session's audio is lost) closes the connection,
and no error reaches any other connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import signal
from http import HTTPStatus
from pathlib import Path
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from streaming.scheduler import StreamFailed

from .keepalive import keep_alive
from .logs import log_event
from .protocol import ProtocolError, decode_audio, error_message, parse_control, parse_start, parse_text
from .server_config import ServerConfig
from .service import Session, SpeechService

log = logging.getLogger("speech.serve")
WEB = Path(__file__).parent / "web"
STATIC = {"/": ("index.html", "text/html; charset=utf-8"), "/index.html": ("index.html", "text/html; charset=utf-8"),
          "/app.js": ("app.js", "text/javascript"), "/capture-worklet.js": ("capture-worklet.js", "text/javascript")}
_IDLE, _GONE = object(), object()  # reader -> worker: the client went quiet / disconnected


def _control_type(text: str) -> str | None:
    """The ``type`` of a text frame, or None if it is not a control message (checked properly by the worker)."""
    try:
        message = json.loads(text)
    except (ValueError, RecursionError):  # ValueError: also integers too long to convert
        return None
    kind = message.get("type") if isinstance(message, dict) else None
    return kind if isinstance(kind, str) else None


def _response(status: HTTPStatus, body: bytes | str, content_type: str = "text/plain; charset=utf-8") -> Response:
    body = body.encode() if isinstance(body, str) else body
    headers = Headers([("Content-Type", content_type), ("Content-Length", str(len(body))),
                       ("Cache-Control", "no-store"), ("Connection", "close")])
    return Response(status.value, status.phrase, headers, body)


def _json_response(status: HTTPStatus, payload: dict[str, Any]) -> Response:
    return _response(status, json.dumps(payload), "application/json")


class SpeechServer:
    """Use as ``async with SpeechServer(config) as server``; ``server.url`` is where it listens."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.service = SpeechService(config)
        self._server: Server | None = None
        self._connections: set[_Connection] = set()
        self._port = config.port

    async def __aenter__(self) -> Self:
        await self.service.__aenter__()
        c = self.config
        try:
            self._server = await serve(self._handle, c.host, c.port, process_request=self._http, compression=None,
                                       max_size=c.max_frame_bytes, max_queue=4, ping_interval=None, close_timeout=5)
        except BaseException:
            await self.service.__aexit__()
            raise
        self._port = self._server.sockets[0].getsockname()[1]
        log_event(log, "listening", url=self.url)
        return self

    async def __aexit__(self, *exc) -> None:
        await self.shutdown(drain_s=0)

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        host = self.config.host if ":" not in self.config.host else f"[{self.config.host}]"
        return f"http://{host}:{self.port}/"

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://") + "ws"

    async def shutdown(self, drain_s: float | None = None) -> None:
        """Stop taking sessions (``/readyz`` and new connections get 503 meanwhile), give open sessions
        ``drain_s`` (the config's by default) to end, then close every connection (1001, going away) and stop
        the models."""
        if self._server is None:
            return
        drain_s = self.config.drain_timeout_s if drain_s is None else drain_s
        self.service.draining = True
        log_event(log, "draining", sessions=len(self.service.sessions), timeout_s=drain_s)
        loop = asyncio.get_running_loop()
        until = loop.time() + drain_s
        while self.service.sessions and loop.time() < until:
            await asyncio.sleep(0.05)
        self._server.close(close_connections=False)
        await asyncio.gather(*(c.close(1001, "server shutting down") for c in list(self._connections)),
                             return_exceptions=True)
        await self._server.wait_closed()
        self._server = None
        await self.service.__aexit__()
        log_event(log, "stopped")

    # ---- HTTP --------------------------------------------------------------------------------------
    def _authorised(self, request: Request) -> bool:
        if not self.config.token:
            return True
        header = request.headers.get("Authorization", "")
        given = header[7:] if header.startswith("Bearer ") else None
        if given is None:
            given = (parse_qs(urlsplit(request.path).query).get("token") or [None])[0]
        return given is not None and hmac.compare_digest(given.encode(), self.config.token.encode())

    def _http(self, connection: ServerConnection, request: Request) -> Response | None:
        path = urlsplit(request.path).path
        if path in STATIC:
            name, kind = STATIC[path]
            return _response(HTTPStatus.OK, (WEB / name).read_bytes(), kind)
        if path == "/healthz":
            return _json_response(HTTPStatus.OK, {"status": "alive"})
        if path == "/readyz":
            ready, reason = self.service.readiness()
            return _json_response(HTTPStatus.OK if ready else HTTPStatus.SERVICE_UNAVAILABLE,
                                  {"ready": ready, "reason": reason, "sessions": len(self.service.sessions),
                                   "max_sessions": self.config.max_sessions})
        if path == "/metrics":
            return _response(HTTPStatus.OK, self.service.metrics.exposition(), "text/plain; version=0.0.4")
        if path == "/v1/models":
            return _json_response(HTTPStatus.OK, self.service.describe())
        if path != "/ws":
            return _json_response(HTTPStatus.NOT_FOUND, {"error": f"no route {path}; WebSocket sessions are on /ws"})
        if not self._authorised(request):
            return _json_response(HTTPStatus.UNAUTHORIZED, error_message(
                "unauthorized", "a token is required: header 'Authorization: Bearer TOKEN' or ?token=TOKEN"))
        if self.service.draining:
            return _json_response(HTTPStatus.SERVICE_UNAVAILABLE, error_message(
                "shutting_down", "the server is shutting down; connect to another instance"))
        if request.headers.get("Upgrade", "").lower() != "websocket":
            ready, reason = self.service.readiness()
            if not ready:
                return _json_response(HTTPStatus.SERVICE_UNAVAILABLE, error_message("busy", reason))
            return _json_response(HTTPStatus.UPGRADE_REQUIRED, error_message(
                "upgrade_required", "/ws speaks WebSocket (see the README's protocol section)"))
        return None

    # ---- WebSocket ---------------------------------------------------------------------------------
    async def _handle(self, ws: ServerConnection) -> None:
        connection = _Connection(self, ws)
        self._connections.add(connection)
        self.service.metrics.connections.inc()
        try:
            await connection.run()
        finally:
            self._connections.discard(connection)
            self.service.metrics.connections.dec()


class _Connection:
    """One WebSocket: a reader filling a bounded queue, a worker running at most one session at a time."""

    def __init__(self, server: SpeechServer, ws: ServerConnection) -> None:
        self.server, self.ws = server, ws
        self.service, self.config = server.service, server.config
        self.queue: asyncio.Queue = asyncio.Queue(maxsize=self.config.queue_frames)
        self.session: Session | None = None
        # Frames are tagged with the reader's epoch, which a start, end or cancel ends; a cancel marks its
        # epoch at once, so the audio queued before it is dropped unheard (the interrupt does not wait).
        self.epoch = 0
        self.cancelled: set[int] = set()
        self.gone = False  # the client disconnected: queued frames are not run
        self.ending: object | None = None  # how the reader ended (_IDLE or _GONE), once it has
        self.peer = ws.remote_address[0] if ws.remote_address else "?"
        self.traffic = 0  # messages read, handled and sent: the keep-alive's sign of life besides pongs

    async def run(self) -> None:
        log_event(log, "connected", peer=self.peer)
        reader = asyncio.create_task(self._read())
        pinger = asyncio.create_task(keep_alive(self.ws, self.config.ping_interval_s, self.config.ping_timeout_s,
                                                lambda: self.traffic))
        outcome = "closed"
        try:
            outcome = await self._work()
        except ConnectionClosed:
            outcome = "disconnected"
        except Exception as error:
            log.exception("connection failed")
            await self._fail("internal", f"internal error: {type(error).__name__}: {error}", 1011)
            outcome = "error"
        finally:
            reader.cancel()
            pinger.cancel()
            self._drop_queue()
            if self.session is not None:
                self.service.close_session(self.session, outcome, cancel=True)
                self.session = None
            log_event(log, "disconnected", peer=self.peer, outcome=outcome)

    async def close(self, code: int, reason: str) -> None:
        await self.ws.close(code, reason)

    # ---- the two tasks -------------------------------------------------------------------------------
    async def _read(self) -> None:
        loop, metrics = asyncio.get_running_loop(), self.service.metrics
        ending = _GONE
        try:
            while True:
                try:
                    message = await asyncio.wait_for(self.ws.recv(), self.config.idle_timeout_s)
                except TimeoutError:
                    ending = _IDLE
                    return
                metrics.bytes_in.inc(len(message))
                self.traffic += 1
                epoch = self.epoch
                if isinstance(message, str) and (kind := _control_type(message)) in ("start", "end", "cancel"):
                    self.epoch += 1
                    if kind == "cancel":
                        self.cancelled.add(epoch)
                await self.queue.put((message, loop.time(), epoch))
                metrics.inbound_queue.inc()
        except ConnectionClosed:
            self.gone = True
        finally:  # however the reader ends, the worker hears of it: now, or once the queue is drained
            self.ending = ending
            with contextlib.suppress(asyncio.QueueFull):
                self.queue.put_nowait((ending, 0.0, -1))

    async def _work(self) -> str:
        while True:
            if self.queue.empty() and self.ending is not None:
                message, arrived, epoch = self.ending, 0.0, -1
            else:
                message, arrived, epoch = await self.queue.get()
            if message is _GONE or self.gone:
                return "disconnected"
            if message is _IDLE:
                await self._fail("idle_timeout", f"nothing received for {self.config.idle_timeout_s:g} s", 1000)
                return "idle"
            self.service.metrics.inbound_queue.dec()
            self.traffic += 1
            try:
                if isinstance(message, bytes):
                    if epoch not in self.cancelled:
                        await self._audio(message, arrived)
                else:
                    await self._control(message, epoch)
            except ProtocolError as error:
                await self._error(error)
                if error.fatal:
                    await self.ws.close(1008, error.code)
                    return "error"
            except StreamFailed as error:
                await self._fail("internal", f"the model failed on this stream: {error}", 1011)
                return "error"

    # ---- messages ----------------------------------------------------------------------------------
    async def _audio(self, data: bytes, arrived: float) -> None:
        if self.session is None:
            raise ProtocolError("no_session", "audio arrived before a session was started: send "
                                '{"type": "start", ...} first and wait for "ready"')
        if self.session.task == "tts":
            raise ProtocolError("bad_message", 'a tts session takes text, not audio: send {"type": "text", "text": "..."}')
        samples = decode_audio(data, self.session.request.encoding)
        for message in await self.session.audio(samples, arrived):
            await self._send(message)

    async def _control(self, text: str, epoch: int) -> None:
        message = parse_control(text) if self.session is None else self._in_session(text)
        kind = message["type"]
        if kind == "start":
            if self.session is not None:
                raise ProtocolError("session_open", f"session {self.session.id} is open: end or cancel it first")
            self.session = self.service.open_session(parse_start(message))
            ready = self.session.ready_message()
            await self._send(ready)
            log_event(log, "session_start", peer=self.peer, session=self.session.id, model=self.session.engine.name,
                      chunk_ms=ready["chunk_ms"], input=ready["input"])
        elif kind == "text":
            session = self._require_session("text")
            if session.task != "tts":
                raise ProtocolError("bad_message", f"text goes to a tts session; this one is {session.task}")
            if epoch not in self.cancelled:  # text queued before an interrupt is not spoken
                session.text(parse_text(message), self._send)
        elif kind == "reference_end":
            session = self._require_session("reference_end")
            if session.task != "vc":
                raise ProtocolError("bad_message", f"reference_end ends a vc session's reference; this one is {session.task}")
            await self._send(session.reference_end())
        elif kind == "end":
            session = self._require_session("end")
            started = asyncio.get_running_loop().time()
            if session.task == "tts":
                frames, done = await session.end()
                replies = [*frames, done]
            else:
                replies = await session.end()
            for reply in replies:
                await self._send(reply)
            self.service.metrics.final_latency.labels(session.engine.name).observe(
                asyncio.get_running_loop().time() - started)
            self.service.close_session(session, "done")
            self.session = None
        elif kind == "cancel":
            self.cancelled.discard(epoch)
            session = self._require_session("cancel")
            self.service.close_session(session, "cancelled", cancel=True)
            self.session = None
            await self._send({"type": "cancelled", "session": session.id})
        elif kind == "ping":
            await self._send({"type": "pong"})
        else:
            raise ProtocolError("bad_message", f"unknown message type {kind!r}; accepted: start, text, reference_end, "
                                "end, cancel, ping")

    def _in_session(self, text: str) -> dict[str, Any]:
        """Inside a session a text frame that is not a control message means its audio is corrupt: fatal."""
        try:
            return parse_control(text)
        except ProtocolError as error:
            raise ProtocolError(error.code, f"{error.message} (audio goes in binary frames)", fatal=True) from None

    def _require_session(self, what: str) -> Session:
        if self.session is None:
            raise ProtocolError("no_session", f"{what} without an open session")
        return self.session

    # ---- sending -------------------------------------------------------------------------------------
    async def _send(self, message: dict[str, Any] | bytes) -> None:
        """A control message (JSON text frame) or audio (binary frame). A client that does not read for
        ``send_timeout_s`` is dropped (its buffers stop growing there)."""
        data = message if isinstance(message, bytes) else json.dumps(message)
        try:
            await asyncio.wait_for(self.ws.send(data), self.config.send_timeout_s)
        except TimeoutError:
            log_event(log, "send_timeout", level=logging.WARNING, peer=self.peer)
            self.ws.transport.abort()
            raise ConnectionClosed(None, None) from None
        self.service.metrics.bytes_out.inc(len(data))
        self.traffic += 1

    async def _error(self, error: ProtocolError) -> None:
        self.service.metrics.errors.labels(error.code).inc()
        log_event(log, "client_error", level=logging.WARNING, peer=self.peer, code=error.code,
                  message=error.message, fatal=error.fatal)
        await self._send(error.message_json())

    async def _fail(self, code: str, message: str, close_code: int) -> None:
        try:
            await self._error(ProtocolError(code, message, fatal=True))
            await self.ws.close(close_code, code)
        except ConnectionClosed:
            pass

    def _drop_queue(self) -> None:
        while not self.queue.empty():
            message, _, _ = self.queue.get_nowait()
            if message is not _GONE and message is not _IDLE:
                self.service.metrics.inbound_queue.dec()


async def serve_until_stopped(config: ServerConfig, on_ready=None) -> None:
    """Run until SIGINT or SIGTERM, then drain (``drain_timeout_s``) and stop."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    server = SpeechServer(config)
    await server.__aenter__()  # cleans up after itself if it fails
    try:
        if on_ready:
            on_ready(server)
        await stop.wait()
    finally:
        await server.shutdown()
