"""`speech serve`'s settings: ``configs/server.yaml`` (every key optional), then command-line overrides."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "server.yaml"
DEFAULT_MODELS = [
    {"name": "fastconformer", "family": "fastconformer", "default_lookahead_ms": 80, "max_wait_ms": 20,
     "backend": "onnx", "precision": "fp32"},
    {"name": "whisper-causal", "family": "whisper-causal", "chunk_ms": 300, "optional": True},
    {"name": "tts", "family": "tts", "steps": 4, "chunk": 16, "max_wait_ms": 5, "backend": "onnx", "optional": True},
    {"name": "vc", "family": "vc", "steps": 1, "max_wait_ms": 5, "max_streams": 16, "backend": "onnx",
     "optional": True},
]


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8765
    max_sessions: int = 64
    max_frame_bytes: int = 262144
    queue_frames: int = 16
    idle_timeout_s: float = 60.0
    ping_interval_s: float = 20.0
    ping_timeout_s: float = 20.0
    send_timeout_s: float = 10.0
    drain_timeout_s: float = 30.0
    token: str | None = None
    threads: int | None = None
    models: list[dict[str, Any]] = field(default_factory=lambda: [dict(m) for m in DEFAULT_MODELS])

    def __post_init__(self) -> None:
        positive = ("max_sessions", "max_frame_bytes", "queue_frames", "idle_timeout_s", "ping_interval_s",
                    "ping_timeout_s", "send_timeout_s")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"server config: {name} must be > 0, got {getattr(self, name)!r}")
        if not 0 <= self.port < 65536:
            raise ValueError(f"server config: port must be 0-65535 (0: any free port), got {self.port}")
        if not self.models:
            raise ValueError("server config: models must list at least one model")


def load_server_config(path: str | Path | None = None, **overrides: Any) -> ServerConfig:
    """The YAML at ``path`` (the shipped ``configs/server.yaml`` if none; built-in defaults if that is missing),
    then ``overrides`` that are not None, then ``SPEECH_TOKEN`` if no token was set."""
    source = Path(path) if path else DEFAULT_CONFIG
    values: dict[str, Any] = {}
    if path or source.is_file():
        try:
            values = yaml.safe_load(source.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as error:
            raise ValueError(f"cannot read server config {source}: {error}") from None
        if not isinstance(values, dict):
            raise ValueError(f"server config {source}: expected a mapping of settings")
    known = {f.name for f in fields(ServerConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"server config {source}: unknown keys {unknown}; accepted: {sorted(known)}")
    config = ServerConfig(**values)
    config = replace(config, **{k: v for k, v in overrides.items() if v is not None})
    if config.token is None and os.environ.get("SPEECH_TOKEN"):
        config = replace(config, token=os.environ["SPEECH_TOKEN"])
    return config
