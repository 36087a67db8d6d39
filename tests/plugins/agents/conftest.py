"""Agents fixtures: the local llama.cpp-backed Ollama server (loaded once per session), a broken one, and harnesses.

Harnesses run the real storage (SQLite or PostgreSQL) and auth plugins, so every agent acts as its
department's real service principal; a recorder plugin keeps what the kernel hands to channels and
the audit trail.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import Any

import pytest

import botcriptofy_agent_configuration
import botcriptofy_agent_security
import botcriptofy_agents
import botcriptofy_auth
import botcriptofy_storage
from botcriptofy import AuditRecord, EventHandler, Notification, hookimpl

from .ollama_server import MODEL_NAME, BrokenOllama, LocalOllama

FAST_HASH = {"argon2_time_cost": 1, "argon2_memory_cost": 1024, "argon2_parallelism": 1}
PRINCIPALS = {"agent_security": "security:member", "agent_configuration": "configuration:member"}


@pytest.fixture(scope="session")
def local_ollama() -> Iterator[LocalOllama]:
    """SmolLM2-135M behind the Ollama API, loaded once for the whole session."""
    server = LocalOllama()
    server.start()
    yield server
    server.close()


@pytest.fixture
def broken_ollama() -> Iterator[Callable[..., BrokenOllama]]:
    """``broken_ollama(reply, delay=...)``: a started server answering ``reply`` to every chat."""
    made: list[BrokenOllama] = []

    def make(reply: Any = "", *, delay: float = 0.0) -> BrokenOllama:
        server = BrokenOllama(reply, delay=delay)
        server.start()
        made.append(server)
        return server

    yield make
    for server in made:
        server.stop()


def decision_json(action: str, **extra: Any) -> str:
    return json.dumps({"action": action, "severity": "high", "confidence": 0.9, "rationale": "test", "parameters": {}, **extra})


class Recorder:
    """Test plugin: records notifications (the channel hook), audit entries and events."""

    def __init__(self) -> None:
        self.notifications: list[Notification] = []
        self.audits: list[AuditRecord] = []
        self.events: list[Any] = []

    @hookimpl
    def send_notification(self, kernel: Any, notification: Notification) -> None:
        self.notifications.append(notification)

    @hookimpl
    def record_audit(self, kernel: Any, record: AuditRecord) -> None:
        self.audits.append(record)

    @hookimpl
    def register_event_handlers(self, kernel: Any) -> list[EventHandler]:
        return [EventHandler("agents-test-recorder", self.events.append, events=("auth.user_blocked", "approvals.outcome"))]

    def of(self, event_type: str) -> list[dict[str, Any]]:
        return [e.payload for e in self.events if e.type == event_type]


def agents_settings(
    database_url: str, *, security: Mapping[str, Any] | None = None, configuration: Mapping[str, Any] | None = None, **extra: Any
) -> dict[str, Any]:
    return {
        "storage": {"url": database_url, "relay_poll_interval": 0.05},
        "auth": {**FAST_HASH, "service_principals": PRINCIPALS},
        "agent_security": dict(security or {}),
        "agent_configuration": {"sample_interval": 3600, **(configuration or {})},
        **extra,
    }


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
async def make_agents(kernel_harness: Any, recorder: Recorder, tmp_path: Any) -> AsyncIterator[Callable[..., Any]]:
    """``await make_agents(security=..., configuration=..., plugins=..., url=...)``: storage + auth + the runtime + both agents."""

    async def make(*, url: str | None = None, plugins: Mapping[str, Any] | None = None, **settings: Any) -> Any:
        merged = {
            "storage": botcriptofy_storage,
            "auth": botcriptofy_auth,
            "agents": botcriptofy_agents,
            "agent_security": botcriptofy_agent_security,
            "agent_configuration": botcriptofy_agent_configuration,
            "recorder": recorder,
            **(plugins or {}),
        }
        database = url or f"sqlite+aiosqlite:///{tmp_path}/agents.db"
        return await kernel_harness(plugins=merged, settings=agents_settings(database, **settings))

    yield make


__all__ = ["MODEL_NAME", "Recorder", "agents_settings", "decision_json"]
