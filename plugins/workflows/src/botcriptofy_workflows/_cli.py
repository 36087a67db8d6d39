"""``botcriptofy workflows list|show|cancel`` and ``botcriptofy schedules list|pause|resume|trigger``."""

from __future__ import annotations

import getpass
import json
from typing import TYPE_CHECKING, Any

import click

from botcriptofy import ProblemError, pass_kernel

from ._ops import STATUSES, act_on_schedule, cancel_workflow, list_schedules, list_workflows, show_schedule, show_workflow
from ._state import ENGINE

if TYPE_CHECKING:
    from botcriptofy import Kernel

    from ._engine import Engine


def _engine(kernel: Kernel) -> Engine:
    engine = kernel.stash.get(ENGINE, None)
    if engine is None:
        raise click.ClickException("the workflows plugin is not enabled (remove it from plugins.disabled)")
    return engine


def _print(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


async def _run(coroutine: Any) -> Any:
    try:
        return await coroutine
    except ProblemError as error:
        raise click.ClickException(error.detail or error.title) from None


def add_commands(cli: click.Group) -> None:
    @cli.group("workflows")
    def workflows() -> None:
        """List, show and cancel workflow executions."""

    @workflows.command("list")
    @click.option("--status", type=click.Choice(sorted(STATUSES)), default=None)
    @click.option("--workflow", default=None, help="Only this workflow type.")
    @click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 1000))
    @click.option("--json", "as_json", is_flag=True)
    @pass_kernel
    async def workflows_list(kernel: Kernel, status: str | None, workflow: str | None, limit: int, as_json: bool) -> None:
        """List workflow executions, newest first."""
        found = await _run(list_workflows(_engine(kernel), status=status, workflow=workflow, limit=limit))
        if as_json:
            _print(found)
            return
        for item in found:
            click.echo(f"{item['id']:<48} {item['workflow']:<32} {item['status']:<10} {item['started_at']}")

    @workflows.command("show")
    @click.argument("workflow_id")
    @pass_kernel
    async def workflows_show(kernel: Kernel, workflow_id: str) -> None:
        """Show one workflow execution with its pending activities."""
        _print(await _run(show_workflow(_engine(kernel), workflow_id)))

    @workflows.command("cancel")
    @click.argument("workflow_id")
    @pass_kernel
    async def workflows_cancel(kernel: Kernel, workflow_id: str) -> None:
        """Ask a running workflow to stop."""
        _print(await _run(cancel_workflow(_engine(kernel), workflow_id)))

    @cli.group("schedules")
    def schedules() -> None:
        """List, pause, resume and trigger the plugins' schedules."""

    @schedules.command("list")
    @click.option("--json", "as_json", is_flag=True)
    @pass_kernel
    async def schedules_list(kernel: Kernel, as_json: bool) -> None:
        """List every schedule with its state and next runs."""
        found = await _run(list_schedules(_engine(kernel)))
        if as_json:
            _print(found)
            return
        for item in found:
            state = "paused" if item["paused"] else "active"
            every = ", ".join(item["cron"]) or ", ".join(f"every {s:g} s" for s in item["interval_seconds"])
            click.echo(f"{item['id']:<40} {state:<7} {every:<24} next {', '.join(item['next_runs'][:1]) or '-'}")

    for action, help_text in (("pause", "Pause a schedule."), ("resume", "Resume a paused schedule."), ("trigger", "Run a schedule now.")):

        def make(action: str = action) -> Any:
            @pass_kernel
            async def command(kernel: Kernel, schedule_id: str) -> None:
                engine = _engine(kernel)
                await _run(show_schedule(engine, schedule_id))
                _print(await _run(act_on_schedule(engine, schedule_id, action, by=f"cli:{getpass.getuser()}")))

            return command

        schedules.command(action, help=help_text)(click.argument("schedule_id")(make()))
