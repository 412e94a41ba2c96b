"""One log format for every service: JSON lines (MAILROOM_LOG_FORMAT=json, the default) or
text for a terminal, each carrying the ids of the work at hand.

`log_context(campaign_id=..., batch_id=...)` adds fields to every line logged inside it (a
context variable: a handler's tasks inherit it, other handlers do not see it). `intake`
sets the message id and the campaign, batch, page or item ids of the message it hands over.

No email address at info level or above: the code logs ids, and whatever text it quotes (an
SMTP reply, an exception) loses the local part of any address in it (`***@example.com`);
debug lines keep them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import sys
from collections.abc import Iterator
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

_context: ContextVar[dict[str, Any] | None] = ContextVar("mailroom_log_context", default=None)
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# the local part of an address (RFC 5322 atext and dots) before @domain.tld
_ADDRESS = re.compile(r"[\w.!#$%&'*+/=?^`{|}~-]+@(?=[\w-]+(?:\.[\w-]+)*\.[A-Za-z]{2,})")


def redact_addresses(text: str) -> str:
    """`text` with the local part of every email address replaced by ***."""
    return _ADDRESS.sub("***@", text)


def _redacted(record: logging.LogRecord, text: str) -> str:
    return text if record.levelno < logging.INFO else redact_addresses(text)


@contextlib.contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Add `fields` (those not None) to every line logged inside the block."""
    current = _context.get() or {}
    token = _context.set({**current, **{k: v for k, v in fields.items() if v is not None}})
    try:
        yield
    finally:
        _context.reset(token)


def add_log_fields(**fields: Any) -> None:
    """Add `fields` (those not None) to the innermost `log_context` for the rest of it."""
    current = _context.get()
    if current is None:
        current = {}
        _context.set(current)
    current.update({k: v for k, v in fields.items() if v is not None})


def current_log_context() -> dict[str, Any]:
    return dict(_context.get() or {})


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the context's ids, and the
    traceback when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": _redacted(record, record.getMessage()),
        }
        line.update(_context.get() or {})
        if record.exc_info:
            line["exception"] = _redacted(record, self.formatException(record.exc_info))
        return json.dumps(line, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """The terminal format, with the context's ids after the message."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        text = _redacted(record, super().format(record))
        fields = _context.get()
        if not fields:
            return text
        first, newline, rest = text.partition("\n")
        ids = " ".join(f"{key}={value}" for key, value in fields.items())
        return f"{first} [{ids}]{newline}{rest}"


def configure_logging(level: str = "INFO", log_format: str = "json") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("aiormq", "aio_pika", "faststream", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
