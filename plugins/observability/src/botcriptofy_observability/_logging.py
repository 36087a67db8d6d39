"""Structured logs: a JSON formatter and the process-wide logging set-up the plugin owns while it runs.

Logging is process state while plugin instances live per generation, so the set-up has an owner
token: the generation that last applied it. A generation that is retired after another one took
over (a restart) leaves the set-up alone; only the owner's ``shutdown`` restores the original.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from opentelemetry import trace

# Attributes every LogRecord has; anything else on a record came from ``extra=`` and is kept.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "color_message", "taskName"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, pid, the record's extras, exception."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        span_context = trace.get_current_span().get_span_context()
        if span_context.is_valid:
            data["trace_id"] = format(span_context.trace_id, "032x")
            data["span_id"] = format(span_context.span_id, "016x")
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_") and key not in data:
                data[key] = value
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            data["stack"] = self.formatStack(record.stack_info)
        return json.dumps(data, default=str, ensure_ascii=False)


class LoggingSetup:
    """The formatters and root level the plugin replaced, so they can be put back."""

    def __init__(self) -> None:
        self.owner: object | None = None
        self.formatter = JsonFormatter()
        self._formatters: dict[logging.Handler, logging.Formatter | None] = {}
        self._level: int | None = None

    @staticmethod
    def handlers() -> list[logging.Handler]:
        """Every handler attached to the root logger or a named logger (uvicorn's included)."""
        loggers: list[logging.Logger] = [logging.getLogger()]
        loggers += [item for item in list(logging.Logger.manager.loggerDict.values()) if isinstance(item, logging.Logger)]
        seen: dict[int, logging.Handler] = {}
        for logger in loggers:
            for handler in logger.handlers:
                seen.setdefault(id(handler), handler)
        return list(seen.values())

    def apply(self, owner: object, *, json_logs: bool, level: int) -> None:
        self.owner = owner
        root = logging.getLogger()
        if self._level is None:
            self._level = root.level
        root.setLevel(level)
        if json_logs:
            for handler in self.handlers():
                if handler not in self._formatters and handler.formatter is not self.formatter:
                    self._formatters[handler] = handler.formatter
                    handler.setFormatter(self.formatter)
        else:
            self._restore_formatters()

    def release(self, owner: object) -> bool:
        """Put the original set-up back if ``owner`` still owns it; return whether it did."""
        if self.owner is not owner:
            return False
        self._restore_formatters()
        if self._level is not None:
            logging.getLogger().setLevel(self._level)
        self._level = None
        self.owner = None
        return True

    def _restore_formatters(self) -> None:
        for handler, formatter in self._formatters.items():
            if handler.formatter is self.formatter:
                handler.setFormatter(formatter)
        self._formatters.clear()


SETUP = LoggingSetup()
