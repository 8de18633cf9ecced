"""Logging: plain text for people, JSON lines (LOOKSTREAM_LOG_JSON=1) for log pipelines.

Pass ``extra={"event_id": ...}`` (or request_id) on every line about an event; both formats show it.
"""

from __future__ import annotations

import json
import logging
import sys
import time

_CONTEXT_KEYS = ("event_id", "request_id", "worker")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for k in _CONTEXT_KEYS:
            if getattr(record, k, None) is not None:
                out[k] = getattr(record, k)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        base = super().format(record)
        ctx = " ".join(f"{k}={getattr(record, k)}" for k in _CONTEXT_KEYS[:2] if getattr(record, k, None))
        return f"{base} [{ctx}]" if ctx else base


class _WorkerName(logging.Filter):
    """Stamps every record with the worker kind (a JSON field) unless the call set one."""

    def __init__(self, worker: str):
        super().__init__()
        self.worker = worker

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "worker", None) is None:
            record.worker = self.worker
        return True


def setup_logging(level: str = "INFO", json_lines: bool = False, worker: str | None = None) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json_lines else TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    if worker:
        handler.addFilter(_WorkerName(worker))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("kafka", "urllib3", "pymilvus"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
