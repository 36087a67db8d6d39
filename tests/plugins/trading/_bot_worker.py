"""A worker process the kill-mid-bot test runs and SIGKILLs: the kernel with storage, auth, billing, exchanges,
trading and workflows (external mode, on the test's Temporal server), plus this file's probe plugin.

Usage: python _bot_worker.py SETTINGS_DIR LOG PHASE. PHASE ``first`` signs a trader up, links a paper
account, stores two candles (the newest says buy), creates and starts a bot, then serves its ticks;
its probe hangs the tick right after the exchange accepted the bot's order and before the bot recorded
the fill, so the test can kill the process at that point. PHASE ``second`` only serves ticks (the
retried one among them). Every ``place_order`` answer is appended to LOG as a JSON line. Not collected
by pytest (the name does not start with ``test_``).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Generator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from botcriptofy import Runtime, hookimpl
from botcriptofy_trading import Parameters, Strategy

LOG = Path(sys.argv[2]) if len(sys.argv) > 2 else Path("bot-worker.log")
PHASE = sys.argv[3] if len(sys.argv) > 3 else "second"
PASSWORD = "correct horse battery staple 42"


def record(kind: str, **data: Any) -> None:
    with LOG.open("a") as handle:
        handle.write(json.dumps({"kind": kind, "phase": PHASE, "pid": os.getpid(), **data}) + "\n")


class BuyAt101(Strategy):
    """+1 on a close of 101, nothing otherwise."""

    name = "buy_at_101"
    description = "Test strategy: buys on a close of 101."
    Parameters = Parameters

    @staticmethod
    def signals(close: np.ndarray, params: Any) -> np.ndarray:
        return np.where(close == 101.0, 1, 0).astype(np.int8)


class Probe:
    """Contributes the test strategy and wraps the exchanges plugin's ``place_order``."""

    @hookimpl(optionalhook=True)
    def register_strategies(self, kernel: Any) -> list[type[Any]]:
        return [BuyAt101]

    @hookimpl(wrapper=True, optionalhook=True)
    def place_order(self, key: str) -> Generator[None, Any, Any]:
        placed = yield

        async def recorded() -> Any:
            order = await placed if asyncio.iscoroutine(placed) else placed
            record("placed", key=key, order_id=order["id"], status=order["status"])
            if PHASE == "first":
                await asyncio.Event().wait()  # the exchange holds the order; the bot has not recorded it: killed here
            return order

        return recorded()


def plugins() -> dict[str, Any]:
    import botcriptofy_auth
    import botcriptofy_exchanges
    import botcriptofy_storage
    import botcriptofy_trading
    from botcriptofy_billing import BillingPlugin
    from botcriptofy_workflows import WorkflowsPlugin

    return {
        "storage": botcriptofy_storage,
        "auth": botcriptofy_auth,
        "billing": BillingPlugin(),
        "exchanges": botcriptofy_exchanges,
        "trading": botcriptofy_trading,
        "workflows": WorkflowsPlugin(),
        "probe": Probe(),
    }


async def set_up(runtime: Runtime) -> None:
    from botcriptofy_exchanges import _candles

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=runtime), base_url="http://worker") as client:
        signup = await client.post(
            "/v1/auth/signup", json={"email": "ana@example.com", "password": PASSWORD, "name": "Ana", "account_type": "trader"}
        )
        assert signup.status_code == 201, signup.text
        headers = {"Authorization": f"Bearer {signup.json()['tokens']['access_token']}"}
        account = await client.post("/v1/trading/accounts", headers=headers, json={"exchange": "paper", "label": "practice"})
        assert account.status_code == 201, account.text
        now = datetime.now(UTC).replace(second=0, microsecond=0)
        closes = [(now - timedelta(minutes=2), 100.0), (now - timedelta(minutes=1), 101.0)]
        assert runtime.current is not None
        await _candles.store(runtime.current, "binance", "BTC/USDT", "1m", [_candles.Candle(t, c, c, c, c, 1) for t, c in closes])
        body = {
            "name": "survivor",
            "strategy": "buy_at_101",
            "account_id": account.json()["id"],
            "symbol": "BTC/USDT",
            "timeframe": "1m",
            "order_amount": "1",
            "max_position": "2",
        }
        bot = await client.post("/v1/trading/bots", headers=headers, json=body)
        assert bot.status_code == 201, bot.text
        record("bot", bot_id=bot.json()["id"], account_id=account.json()["id"], tenant_id=signup.json()["tenant"]["id"])
        started = await client.post(f"/v1/trading/bots/{bot.json()['id']}/start", headers=headers)
        assert started.status_code == 200, started.text


async def main(settings_dir: str) -> None:
    runtime = Runtime(Path(settings_dir), env="testing", plugins=plugins(), discover=False, watch=False)
    await runtime.start()
    try:
        if PHASE == "first":
            await set_up(runtime)
        record("ready")
        await asyncio.Event().wait()
    finally:
        await runtime.stop()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
