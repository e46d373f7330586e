"""Structured logs: one JSON object per line (time, level, event and its fields), for log shippers."""

from __future__ import annotations

import json
import logging
import sys
import time


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {"ts": round(record.created, 3), "level": record.levelname.lower(), "logger": record.name}
        entry.update(getattr(record, "fields", None) or {"event": record.getMessage()})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def log_event(logger: logging.Logger, event: str, *, level: int = logging.INFO, **fields) -> None:
    if logger.isEnabledFor(level):
        logger.log(level, event, extra={"fields": {"event": event, **fields}})


def configure_json_logs(level: int = logging.INFO) -> None:
    """JSON lines on stderr for the ``speech`` loggers."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("speech")
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False
    logging.Formatter.converter = time.gmtime
