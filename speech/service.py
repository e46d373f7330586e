"""The service behind the WebSocket server, transport-free: the models on one shared chunk scheduler,
admission control, the metrics, and opening sessions for clients' ``start`` messages."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Self

from streaming.backend import TorchBackend
from streaming.pool import PoolFull
from streaming.scheduler import ChunkScheduler

from .asr_session import AsrSession
from .engines import AsrEngine, load_engine
from .logs import log_event
from .metrics import ServiceMetrics
from .protocol import TASKS, ProtocolError, StartRequest
from .server_config import ServerConfig
from .tts_session import TtsSession
from .vc_session import VcSession

log = logging.getLogger("speech.serve")
Session = AsrSession | TtsSession | VcSession
COMING = {"duplex": 8}  # tasks the protocol defines whose models land with these issues
SESSIONS = {"asr": AsrSession, "tts": TtsSession, "vc": VcSession}


class SpeechService:
    """Use as ``async with SpeechService(config)``: loads the models, starts the scheduler."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.scheduler = ChunkScheduler(TorchBackend("cpu"))
        self.step_thread = ThreadPoolExecutor(1, thread_name_prefix="onnx-steps")
        self.engines: dict[str, AsrEngine] = {}
        self.unavailable: dict[str, str] = {}
        self.metrics = ServiceMetrics(lambda: self.scheduler.lanes)
        self.sessions: dict[str, Session] = {}
        self.draining = False
        self.loaded = False

    async def __aenter__(self) -> Self:
        await self.scheduler.start()
        for spec in self.config.models:
            name = spec.get("name", spec.get("family"))
            try:
                self.engines[name] = load_engine(spec, self.scheduler, self.step_thread)
                log_event(log, "model_loaded", model=name, **self.engines[name].describe())
            except (ImportError, OSError, ValueError) as error:
                if not spec.get("optional"):
                    await self._stop()
                    raise
                self.unavailable[name] = str(error)
                log_event(log, "model_skipped", level=logging.WARNING, model=name, reason=str(error))
        if not self.engines:
            await self._stop()
            raise ValueError("no model could be loaded: " + "; ".join(f"{k}: {v}" for k, v in self.unavailable.items()))
        self.loaded = True
        return self

    async def __aexit__(self, *exc) -> None:
        for session in list(self.sessions.values()):
            self.close_session(session, "shutdown", cancel=True)
        await self._stop()

    async def _stop(self) -> None:
        await self.scheduler.stop()
        self.step_thread.shutdown(wait=True)

    # ---- what clients may ask for -----------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        defaults = self._default_models()
        return {"models": [engine.describe() for engine in self.engines.values()],
                "unavailable": self.unavailable,
                "tasks": {task: "available" if task in defaults else f"arrives with issue {COMING[task]}"
                          if task in COMING else "no model for it is loaded here" for task in TASKS},
                "default_model": defaults}

    def _default_models(self) -> dict[str, str]:
        """The first model of each task."""
        defaults: dict[str, str] = {}
        for name, engine in self.engines.items():
            defaults.setdefault(engine.task, name)
        return defaults

    @property
    def at_capacity(self) -> bool:
        return len(self.sessions) >= self.config.max_sessions

    def readiness(self) -> tuple[bool, str]:
        if not self.loaded:
            return False, "loading models"
        if self.draining:
            return False, "shutting down"
        if self.at_capacity:
            return False, f"at capacity ({self.config.max_sessions} sessions)"
        return True, "ready"

    # ---- sessions ------------------------------------------------------------------------------------
    def open_session(self, request: StartRequest) -> Session:
        """A session for a ``start``, or a :class:`ProtocolError` that says why not."""
        if self.draining:
            raise ProtocolError("shutting_down", "the server is shutting down; connect again to another instance")
        defaults = self._default_models()
        if request.task in COMING or request.task not in defaults:
            why = (f"its model has not landed (issue {COMING[request.task]})" if request.task in COMING
                   else "no model for it is loaded here")
            raise ProtocolError("task_unavailable", f"task {request.task!r} is part of the protocol but {why}; "
                                f"available: {sorted(defaults)}")
        name = request.model or defaults[request.task]
        models = sorted(n for n, e in self.engines.items() if e.task == request.task)
        if name not in models:
            hint = f" ({self.unavailable[name]})" if name in self.unavailable else ""
            raise ProtocolError("unknown_model", f"model {name!r} is not served here for {request.task}{hint}; "
                                f"models for {request.task}: {models}")
        if self.at_capacity:
            raise ProtocolError("busy", f"the server is at capacity ({self.config.max_sessions} sessions); "
                                "retry later")
        try:
            session = SESSIONS[request.task](request, self.engines[name], self.metrics)
        except PoolFull:
            raise ProtocolError("busy", f"model {name} is at capacity; retry later") from None
        self.sessions[session.id] = session
        self.metrics.sessions.labels(request.task, name).inc()
        return session

    def close_session(self, session: Session, outcome: str, *, cancel: bool = False) -> None:
        """Forget a session (after ``done``, a cancel, an error or a disconnect); ``cancel`` frees its slots."""
        if self.sessions.pop(session.id, None) is None:
            return
        if cancel:
            session.cancel()
        self.metrics.sessions.labels(session.task, session.engine.name).dec()
        self.metrics.sessions_total.labels(session.task, session.engine.name, outcome).inc()
        log_event(log, "session_end", session=session.id, model=session.engine.name, outcome=outcome,
                  **session.summary())
