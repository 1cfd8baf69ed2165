"""Logging set-up for the CLI (library code only gets loggers, never configures them).

Library code passes structured fields as ``extra={"fields": {...}}``; the JSON formatter
writes them as keys of the line, the text formatter as ``key=value`` pairs after the message.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import orjson


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields = getattr(record, "fields", None)
    return fields if isinstance(fields, dict) else {}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, the record's fields, exc."""

    def format(self, record: logging.LogRecord) -> str:
        line = {"ts": round(record.created, 3), "level": record.levelname.lower(),
                "logger": record.name, "msg": record.getMessage(), **_fields(record)}
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


class TextFormatter(logging.Formatter):
    """``time level logger: message key=value ...`` (logfmt-style fields)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        text = super().formatMessage(record)
        fields = _fields(record)
        if not fields:
            return text
        return text + " " + " ".join(f"{key}={_logfmt(value)}" for key, value in fields.items())


def _logfmt(value: Any) -> str:
    text = str(value)
    if text and not any(c in text for c in ' "=\\') and text.isprintable():
        return text
    return orjson.dumps(text).decode()


def configure_logging(*, verbose: int, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose > 0 else logging.INFO)
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
