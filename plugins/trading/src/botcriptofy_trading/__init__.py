"""BotCriptoFy trading plugin: strategies (built-in and contributed by plugins) and backtests over stored candles.

Hook implementations only; the logic lives in the private modules. Other plugins contribute
strategies through the ``register_strategies`` hook this plugin declares (see docs/trading.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from botcriptofy import Activity, DataSubject, Kernel, Migrations, Permission, SettingsSchema, StaffCommand, Workflow, hookimpl

from . import hookspecs
from ._settings import SCHEMA, TradingSettings
from ._strategy import Parameters, RsiReversion, SmaCross, Strategy, rsi, sma

if TYPE_CHECKING:
    from starlette.routing import BaseRoute

__all__ = ["Parameters", "RsiReversion", "SmaCross", "Strategy", "TradingSettings", "__version__", "hookspecs", "rsi", "sma"]
__version__ = "0.2.0"

MIGRATIONS = Path(__file__).parent / "migrations"


@hookimpl
def register_hookspecs() -> list[Any]:
    return [hookspecs]


@hookimpl
def plugin_settings_schema() -> SettingsSchema:
    return SCHEMA


@hookimpl
async def startup(kernel: Kernel) -> None:
    from ._backtests import RUNNER, Runner, resume

    settings = kernel.settings_for("trading") or TradingSettings()
    kernel.stash[RUNNER] = Runner(kernel, settings)
    if kernel.has_database():
        await resume(kernel)


@hookimpl
def settings_changed(kernel: Kernel, previous: Any, current: TradingSettings, changed: frozenset[str]) -> None:
    from ._backtests import RUNNER

    kernel.stash[RUNNER].settings = current


@hookimpl
async def shutdown(kernel: Kernel) -> None:
    from ._backtests import RUNNER

    runner = kernel.stash.get(RUNNER, None)
    if runner is not None:
        await runner.stop()


@hookimpl
def register_migrations(kernel: Kernel) -> Migrations:
    from ._models import metadata

    return Migrations(directory=MIGRATIONS, metadata=metadata)


@hookimpl
def register_routes(kernel: Kernel) -> list[BaseRoute]:
    from ._bot_routes import routes as bot_routes
    from ._routes import routes

    return [*routes(), *bot_routes()]


@hookimpl
def register_workflows(kernel: Kernel) -> list[Workflow | Activity]:
    """A running bot is the ``trading.bot`` workflow; each tick an activity (retried on another worker when one dies)."""
    from . import _bots

    settings = kernel.settings_for("trading") or TradingSettings()

    async def tick(input: Any) -> dict[str, Any]:
        return await _bots.tick(kernel.current(), input["tenant_id"], input["bot_id"], run=int(input["run"]))

    async def handover(input: Any) -> dict[str, Any]:
        return await _bots.handover(kernel.current(), input)

    return [
        Workflow(_bots.WORKFLOW, _bots.run_workflow, description="A running trading bot: tick, wait, tick again."),
        Activity(_bots.TICK, tick, timeout=settings.bot_tick_timeout),
        Activity(_bots.HANDOVER, handover, timeout=60),
    ]


@hookimpl
def register_permissions(kernel: Kernel) -> list[Permission]:
    from ._commands import OPERATE, READ

    return [
        Permission(READ, "See every tenant's bots from the staff channel.", frozenset({"support:viewer", "configuration:viewer"})),
        Permission(OPERATE, "Stop or pause any bot from the staff channel.", frozenset({"support:manager", "configuration:member"})),
    ]


@hookimpl
def register_staff_commands(kernel: Kernel) -> list[StaffCommand]:
    from ._commands import COMMANDS

    return list(COMMANDS)


@hookimpl
async def export_subject_data(kernel: Kernel, subject: DataSubject) -> dict[str, Any] | None:
    """The subject's tenant's bots, decisions, orders, fills and saved strategies."""
    if subject.tenant_id is None or not kernel.has_database():
        return None
    from ._bots import export_tenant

    return await export_tenant(kernel, subject.tenant_id)


@hookimpl
async def erase_subject_data(kernel: Kernel, subject: DataSubject) -> dict[str, Any] | None:
    """Stop and delete the subject's tenant's bots (with their history) and saved strategies."""
    if subject.tenant_id is None or not kernel.has_database():
        return None
    from ._bots import erase_tenant

    return await erase_tenant(kernel, subject.tenant_id)
