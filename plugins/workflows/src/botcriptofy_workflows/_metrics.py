"""Prometheus collectors of the workflows plugin, created once per plugin object."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import Counter


@dataclass
class WorkflowMetrics:
    workflow_failures: Counter = field(
        default_factory=lambda: Counter(
            "botcriptofy_workflow_failures", "Workflow executions that failed, by workflow type.", ["workflow"], registry=None
        )
    )
    activity_failures: Counter = field(
        default_factory=lambda: Counter(
            "botcriptofy_workflow_activity_failures", "Activity attempts that failed, by activity type.", ["activity"], registry=None
        )
    )
    server_restarts: Counter = field(
        default_factory=lambda: Counter("botcriptofy_workflow_server_restarts", "Restarts of the embedded Temporal server.", registry=None)
    )

    def collectors(self) -> list[Counter]:
        return [self.workflow_failures, self.activity_failures, self.server_restarts]
