"""BotCriptoFy exchanges plugin: exchange accounts, market data (OHLCV candles) and the paper exchange.

Hook implementations only; the logic lives in the private modules. See docs/exchanges.md.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from botcriptofy import DataSubject, Kernel, Migrations, Permission, ProblemError, SecretBox, SettingsSchema, hookimpl

from ._settings import SCHEMA, ExchangesSettings

if TYPE_CHECKING:
    import click
    from starlette.routing import BaseRoute

__all__ = ["ExchangesSettings", "__version__"]
__version__ = "0.2.0"

MIGRATIONS = Path(__file__).parent / "migrations"


@hookimpl
def plugin_settings_schema() -> SettingsSchema:
    return SCHEMA


@hookimpl
def startup(kernel: Kernel) -> None:
    from ._ccxt import Clients
    from ._state import STATE, ExchangesState

    settings = kernel.settings_for("exchanges") or ExchangesSettings()
    kernel.stash[STATE] = ExchangesState(settings=settings, clients=Clients(settings))


@hookimpl
def settings_changed(kernel: Kernel, previous: Any, current: ExchangesSettings, changed: frozenset[str]) -> None:
    from ._state import state_of

    state = state_of(kernel)
    state.settings = current
    state.clients.settings = current


@hookimpl
async def shutdown(kernel: Kernel) -> None:
    from ._state import STATE

    state = kernel.stash.get(STATE, None)
    if state is not None:
        await state.clients.close()


@hookimpl
def register_migrations(kernel: Kernel) -> Migrations:
    from ._models import metadata

    return Migrations(directory=MIGRATIONS, metadata=metadata)


@hookimpl
def register_routes(kernel: Kernel) -> list[BaseRoute]:
    from ._routes import routes

    return routes()


@hookimpl
def register_permissions(kernel: Kernel) -> list[Permission]:
    return [
        Permission("marketdata:import", "Import or fetch candles into the platform's market data.", frozenset({"configuration:member"}))
    ]


@hookimpl
def register_commands(cli: click.Group) -> None:
    from ._cli import add_commands

    add_commands(cli)


@hookimpl(optionalhook=True)
async def load_candles(
    kernel: Kernel, exchange: str, symbol: str, timeframe: str, start: datetime | None, end: datetime | None
) -> list[dict[str, Any]] | None:
    """Serve stored candles to strategies and backtests (a hook the trading plugin declares)."""
    from . import _candles

    found = await _candles.load(kernel, exchange, symbol, timeframe, start=start, end=end)
    return [c.as_dict() for c in found]


@hookimpl(optionalhook=True)
async def trading_account(kernel: Kernel, tenant_id: str, account_id: str) -> dict[str, Any] | None:
    """Describe an account to the trading plugin's bots (a hook it declares): never its keys."""
    from ._service import account_view, get_account

    try:
        return account_view(await get_account(kernel, tenant_id, account_id))
    except ProblemError:
        return None


@hookimpl(optionalhook=True)
async def place_order(
    kernel: Kernel, tenant_id: str, account_id: str, key: str, symbol: str, side: str, type: str, amount: str, price: str | None
) -> dict[str, Any] | None:
    """Place a bot's order once per key (a hook the trading plugin declares); the same path as ``POST /v1/trading/orders``."""
    from decimal import Decimal

    from ._service import OrderRequest
    from ._service import place_order as place

    request = OrderRequest(account_id, symbol, side, type, Decimal(amount), Decimal(price) if price is not None else None)
    order, _ = await place(kernel, tenant_id, key, request)
    return order


@hookimpl
async def export_subject_data(kernel: Kernel, subject: DataSubject) -> dict[str, Any] | None:
    if subject.tenant_id is None or not kernel.has_database():
        return None
    from ._service import export_tenant

    return await export_tenant(kernel, subject.tenant_id)


@hookimpl
async def erase_subject_data(kernel: Kernel, subject: DataSubject) -> dict[str, Any] | None:
    if subject.tenant_id is None or not kernel.has_database():
        return None
    from ._service import erase_tenant

    return await erase_tenant(kernel, subject.tenant_id)


@hookimpl
async def reencrypt_secrets(kernel: Kernel, box: SecretBox) -> int:
    from ._service import reencrypt

    return await reencrypt(kernel, box)
