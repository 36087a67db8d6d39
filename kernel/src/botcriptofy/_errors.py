"""Errors for people: each says what happened, where, and what to do."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any


class BotCriptoFyError(Exception):
    """Base class of every error the kernel raises on purpose."""


class ConfigError(BotCriptoFyError):
    """A configuration that cannot be applied.

    ``file`` is the settings file (or environment variable) the bad value came from, ``key`` the
    dotted settings key, and ``reason`` what is wrong and how to fix it.
    """

    def __init__(self, reason: str, *, file: str | None = None, key: str | None = None) -> None:
        self.file = file
        self.key = key
        self.reason = reason
        where = ", ".join(part for part in (file, f"key '{key}'" if key else None) if part)
        super().__init__(f"{where}: {reason}" if where else reason)


class PluginError(BotCriptoFyError):
    """A plugin that cannot be loaded or started; names the plugin, the hook and the fix."""

    def __init__(self, plugin: str, reason: str, *, hook: str | None = None, fix: str | None = None) -> None:
        self.plugin = plugin
        self.hook = hook
        self.reason = reason
        self.fix = fix
        message = f"plugin '{plugin}'"
        if hook:
            message += f", hook '{hook}'"
        message += f": {reason}"
        if fix:
            message += f" Fix: {fix}"
        super().__init__(message)


class ProblemError(BotCriptoFyError):
    """An HTTP error rendered as ``application/problem+json`` (RFC 9457).

    Raise it from a route or a request-path hook; the kernel's error handler renders it.
    """

    def __init__(
        self,
        status: int,
        title: str,
        detail: str | None = None,
        *,
        type: str = "about:blank",
        errors: Sequence[Mapping[str, Any]] | None = None,
        headers: Mapping[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        self.status = status
        self.title = title
        self.detail = detail
        self.type = type
        self.errors = list(errors) if errors is not None else None
        self.headers = dict(headers or {})
        self.extensions = extensions
        super().__init__(f"{status} {title}: {detail}" if detail else f"{status} {title}")

    def to_dict(self) -> dict[str, Any]:
        """Return the problem document."""
        body: dict[str, Any] = {"type": self.type, "title": self.title, "status": self.status}
        if self.detail is not None:
            body["detail"] = self.detail
        if self.errors is not None:
            body["errors"] = self.errors
        body.update(self.extensions)
        return body


class ServiceUnavailable(ProblemError):
    """A dependency (database, Redis, a bounded work queue) cannot serve this request right now: 503 with ``Retry-After``.

    Raise it (or let a plugin's error translation raise it) instead of letting a connection error
    become a 500: the client learns that nothing happened and when to retry, and the connection
    stays usable.
    """

    def __init__(self, detail: str, *, retry_after: float = 1.0, dependency: str | None = None, **extensions: Any) -> None:
        seconds = max(1, int(retry_after + 0.999))
        if dependency:
            extensions["dependency"] = dependency
        super().__init__(
            503,
            "Service Unavailable",
            detail,
            type="https://botcriptofy.dev/problems/service-unavailable",
            headers={"Retry-After": str(seconds)},
            **extensions,
        )
        self.retry_after = seconds
        self.dependency = dependency


class RoundErrors:
    """How a plugin's background loop (a relay, a dispatcher, a poller) reports its failed rounds.

    A :class:`ServiceUnavailable` (the database or Redis is down, a pool is exhausted) is expected and
    said in one WARNING line; another error is logged with its traceback. Either is said once while it
    repeats (then at DEBUG), and again after a round succeeds (:meth:`succeeded`).
    """

    def __init__(self, log: logging.Logger, what: str) -> None:
        self.log = log
        self.what = what
        self.last: str | None = None

    def failed(self, error: BaseException) -> None:
        """Report ``error`` (call from the loop's ``except Exception``)."""
        described = f"{type(error).__name__}: {error}"
        if described == self.last:
            self.log.debug("%s failed again: %s", self.what, described)
        elif isinstance(error, ServiceUnavailable):
            self.log.warning("%s paused: %s", self.what, error.detail)
        else:
            self.log.error("%s failed", self.what, exc_info=error)
        self.last = described

    def succeeded(self) -> None:
        """A round went through: the next failure is reported in full again."""
        self.last = None
