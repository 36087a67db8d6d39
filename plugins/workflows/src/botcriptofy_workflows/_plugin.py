"""The workflows plugin's hook implementations."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from botcriptofy import HealthCheck, SettingsSchema, hookimpl

from ._approvals import TemporalApprovals, approval_activities
from ._engine import Engine, EngineFacade
from ._metrics import WorkflowMetrics
from ._settings import SCHEMA, WorkflowsSettings
from ._state import ENGINE
from ._temporal import ApprovalWorkflow

if TYPE_CHECKING:
    import click
    from starlette.routing import BaseRoute
    from temporalio.client import Client

    from botcriptofy import Activity, Approvals, Kernel, Workflow, Workflows

NAME = "workflows"


class WorkflowsPlugin:
    """Schedules, durable approvals, timers and retries for every plugin, on Temporal.

    ``client`` (tests) makes the engine use a connected Temporal client, such as a time-skipping
    test environment's, instead of the embedded server or the external address.
    """

    def __init__(self, *, client: Client | None = None) -> None:
        self.client = client
        self.metrics = WorkflowMetrics()

    @hookimpl
    def plugin_settings_schema(self) -> SettingsSchema:
        return SCHEMA

    def _settings(self, kernel: Kernel) -> WorkflowsSettings:
        settings = kernel.settings_for(NAME)
        return settings if isinstance(settings, WorkflowsSettings) else WorkflowsSettings()

    @hookimpl
    async def startup(self, kernel: Kernel) -> None:
        engine = Engine(kernel, self._settings(kernel), self.metrics, client=self.client)
        engine.extra_workflows = [ApprovalWorkflow]
        engine.extra_activities = approval_activities(engine)
        await engine.start()
        kernel.stash[ENGINE] = engine

    @hookimpl
    def settings_changed(self, kernel: Kernel, previous: Any, current: Any, changed: frozenset[str]) -> None:
        kernel.stash[ENGINE].settings = current

    @hookimpl
    async def shutdown(self, kernel: Kernel) -> None:
        engine = kernel.stash.get(ENGINE, None)
        if engine is not None:
            await engine.stop()

    @hookimpl
    def workflow_engine(self, kernel: Kernel) -> Workflows | None:
        engine = kernel.stash.get(ENGINE, None)
        return EngineFacade(engine) if engine is not None else None

    @hookimpl
    def approvals(self, kernel: Kernel) -> Approvals | None:
        engine = kernel.stash.get(ENGINE, None)
        return TemporalApprovals(engine) if engine is not None else None

    @hookimpl
    def register_workflows(self, kernel: Kernel) -> list[Workflow | Activity]:
        from ._report import report_contributions

        return report_contributions(kernel)

    @hookimpl
    def health_checks(self, kernel: Kernel) -> list[HealthCheck]:
        engine = kernel.stash.get(ENGINE, None)
        return [HealthCheck("temporal", engine.health)] if engine is not None else []

    @hookimpl
    def register_metrics(self, kernel: Kernel) -> list[Any]:
        return self.metrics.collectors()

    @hookimpl
    def register_routes(self, kernel: Kernel) -> list[BaseRoute]:
        from ._routes import routes

        return list(routes())

    @hookimpl
    def register_commands(self, cli: click.Group) -> None:
        from ._cli import add_commands

        add_commands(cli)
