"""Notifications benchmark: department fan-out to a local Bot API server, and what kernel.notify() adds to a request.

Run by hand (never by the tests)::

    .venv/bin/python bench/notifications_bench.py                    # SQLite (the embedded default)
    .venv/bin/python bench/notifications_bench.py --url postgresql+asyncpg://postgres@127.0.0.1:5432/DB

1. Fan-out: N department notifications (default 1,000), each ``kernel.notify()`` in a transaction of its
   own (as N requests would), to a department mapped to a group chat; the time until the local Bot API
   server (tests/plugins/telegram/botapi.py) has received all of them, with the bot's pacing switched
   off, gives the pipeline's delivery rate (outbox relay, router, dispatcher, sender), printed as ratios
   to Telegram's published limits: 30 messages/s per bot, 20/min per group, 1/s per chat. With the real
   limits the sender paces itself to them instead (tests/plugins/telegram/test_bot.py checks the pace).
2. Request latency, in process (httpx over ASGI), cases interleaved in one run: a request writing one
   row in a storage transaction, without and with ``kernel.notify(..., session=session)`` in the same
   transaction (the relay is off, so this is the outbox write alone); anonymous and authenticated
   (bearer token) requests; and, as the same-run baseline of the old cost, the anonymous request with the
   outbox row written by a SQLAlchemy INSERT as storage 0.2 did. Each ratio is against the same request
   without the write.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "plugins" / "telegram"))

from botapi import BotApiServer  # noqa: E402 - the local Bot API server of the tests

import botcriptofy_auth  # noqa: E402
import botcriptofy_notifications  # noqa: E402
import botcriptofy_storage  # noqa: E402
import botcriptofy_telegram  # noqa: E402
from botcriptofy import (  # noqa: E402
    Envelope,
    Notification,
    NotificationRequested,
    Route,
    Runtime,
    hookimpl,
    kernel_of,
    require,
)
from botcriptofy.testing import render_settings  # noqa: E402
from botcriptofy_storage._outbox import events as outbox_events  # noqa: E402 - the bench's baseline writes the table directly

FAST_HASH = {"argon2_time_cost": 1, "argon2_memory_cost": 1024, "argon2_parallelism": 1}


async def runtime_for(directory: Path, settings: dict[str, Any], plugins: dict[str, Any]) -> Runtime:
    directory.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - set-up, before anything is measured
    (directory / "settings.toml").write_text(render_settings(settings, state_dir=directory / "state"))
    runtime = Runtime(directory, env="testing", plugins=plugins, discover=False, watch=False)
    await runtime.start()
    return runtime


async def fan_out(url: str, count: int, scratch: Path) -> dict[str, float]:
    server = BotApiServer()
    await server.start()
    settings = {
        "storage": {"url": url, "relay_poll_interval": 0.05, "relay_batch_size": 500},
        "auth": FAST_HASH,
        "notifications": {"poll_interval": 0.05, "flood_cap": count * 2, "batch_size": 500},
        "telegram": {
            "bot_token": "1:bench",
            "api_base": server.url,
            "per_second": 1e6,
            "private_interval": 0.0,
            "group_per_minute": 1e9,
            "poll_timeout": 1,
            "departments": {"security": {"chat_id": -1}},
        },
    }
    plugins = {
        "storage": botcriptofy_storage,
        "auth": botcriptofy_auth,
        "notifications": botcriptofy_notifications,
        "telegram": botcriptofy_telegram,
    }
    runtime = await runtime_for(scratch / "fanout", settings, plugins)
    try:
        kernel = runtime.current
        assert kernel is not None
        started = time.perf_counter()
        for number in range(count):
            await kernel.notify(
                Notification(recipient="department:security", subject=f"alert {number}", body="incident", category="agent.alert")
            )
        published = time.perf_counter() - started
        while len(server.texts(-1)) < count:  # noqa: ASYNC110 - polling the server's record is the measurement
            await asyncio.sleep(0.02)
        elapsed = time.perf_counter() - started
    finally:
        await runtime.stop()
        await server.stop()
    rate = count / elapsed
    return {
        "count": count,
        "publish_s": published,
        "publish_per_s": count / published,
        "vs_chat_limit_1_per_s": rate / 1.0,
        "at_group_limit_s": count / (20 / 60),
        "all_delivered_s": elapsed,
        "rate_per_s": rate,
        "vs_bot_limit_30_per_s": rate / 30.0,
        "vs_group_limit_20_per_min": rate / (20 / 60),
    }


def load_average() -> str:
    """The 1, 5 and 15 minute load averages: the machine is shared, and the numbers mean little without them."""
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


PROBE_ROWS = sa.Table(
    "bench_rows",
    sa.MetaData(),
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("note", sa.String(50)),
)


async def orm_outbox_write(session: Any, notification: Notification) -> None:
    """The outbox write as storage 0.2 did it (a SQLAlchemy INSERT): the same-run baseline of what notify() cost before."""
    envelope = Envelope.wrap(NotificationRequested(notification=notification.to_dict()))
    now = datetime.now(UTC)
    row = {
        "id": envelope.id,
        "type": envelope.type,
        "payload": envelope.payload,
        "idempotency_key": envelope.idempotency_key,
        "envelope_tenant_id": None,
        "occurred_at": envelope.occurred_at,
        "created_at": now,
        "dispatched_at": None,
    }
    await session.execute(sa.insert(outbox_events), [row])


class Probe:
    """Routes writing one row, with or without a notification in the same transaction.

    ``/bench/write`` is the smallest write request there is (no caller, one INSERT); ``/bench/write-as``
    is an authenticated one (a bearer token resolved by the auth plugin, a JSON body), as API writes are.
    """

    @hookimpl
    async def startup(self, kernel: Any) -> None:
        async with kernel.database().engine.begin() as connection:
            await connection.run_sync(PROBE_ROWS.metadata.create_all)

    @hookimpl
    def register_routes(self, kernel: Any) -> list[Any]:
        async def write(request: Any) -> dict[str, bool]:
            k = kernel_of(request)
            notification = Notification(recipient="department:security", subject="s", body="b")
            async with k.database().session(system=True) as session:
                await session.execute(sa.insert(PROBE_ROWS).values(note="x"))
                if request.query_params.get("notify") == "1":
                    await k.notify(notification, session=session)
                elif request.query_params.get("notify") == "orm":
                    await orm_outbox_write(session, notification)
            return {"ok": True}

        async def write_as(request: Any) -> dict[str, bool]:
            actor = await require(request)
            note = str((await request.json()).get("note", ""))[:50]
            k = kernel_of(request)
            async with k.database().session(system=True) as session:
                await session.execute(sa.insert(PROBE_ROWS).values(note=note))
                if request.query_params.get("notify") == "1":
                    await k.notify(Notification(recipient=f"user:{actor.id}", subject="s", body="b"), session=session)
            return {"ok": True}

        return [Route("/bench/write", write, methods=["POST"]), Route("/bench/write-as", write_as, methods=["POST"])]


async def request_cost(url: str, rounds: int, scratch: Path) -> dict[str, float]:
    settings = {"storage": {"url": url, "relay_enabled": False}, "auth": FAST_HASH}
    plugins = {"storage": botcriptofy_storage, "auth": botcriptofy_auth, "notifications": botcriptofy_notifications, "probe": Probe()}
    runtime = await runtime_for(scratch / "latency", settings, plugins)
    cases = {
        "plain": ("/bench/write", None),
        "plain+notify": ("/bench/write?notify=1", None),
        "plain+orm": ("/bench/write?notify=orm", None),
        "auth": ("/bench/write-as", {"note": "x"}),
        "auth+notify": ("/bench/write-as?notify=1", {"note": "x"}),
    }
    timings: dict[str, list[float]] = {name: [] for name in cases}
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=runtime), base_url="http://bench") as client:
            signup = await client.post(
                "/v1/auth/signup",
                json={"email": "bench@example.com", "password": "correct horse battery staple", "name": "Bench", "account_type": "trader"},
            )
            assert signup.status_code == 201, signup.text
            login = await client.post("/v1/auth/login", json={"email": "bench@example.com", "password": "correct horse battery staple"})
            headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
            for _ in range(20):
                for path, body in cases.values():
                    await client.post(path, json=body, headers=headers if body is not None else None)
            for _ in range(rounds):  # interleaved, so the machine's load hits every case alike
                for name, (path, body) in cases.items():
                    started = time.perf_counter()
                    response = await client.post(path, json=body, headers=headers if body is not None else None)
                    timings[name].append(time.perf_counter() - started)
                    assert response.status_code == 200, response.text
    finally:
        await runtime.stop()
    out: dict[str, float] = {}
    for name, values in timings.items():
        values.sort()
        out[f"{name}_median_ms"] = statistics.median(values) * 1000
        out[f"{name}_p10_ms"] = values[int(len(values) * 0.10)] * 1000
        out[f"{name}_p95_ms"] = values[int(len(values) * 0.95)] * 1000
    # Medians, and 10th percentiles: on a shared machine other processes only ever add time, so the
    # lower percentile is the steadier estimate of what the code itself costs.
    for kind, against in (("plain", "plain+notify"), ("auth", "auth+notify"), ("orm", "plain+orm")):
        base = "auth" if kind == "auth" else "plain"
        out[f"{kind}_ratio"] = out[f"{against}_median_ms"] / out[f"{base}_median_ms"]
        out[f"{kind}_p10_ratio"] = out[f"{against}_p10_ms"] / out[f"{base}_p10_ms"]
    return out


def report_latency(cost: dict[str, float]) -> None:
    rows = (
        ("plain", "plain+notify", "anonymous request writing one row, + kernel.notify() in its transaction"),
        ("auth", "auth+notify", "authenticated request writing one row, + kernel.notify() in its transaction"),
        ("plain", "plain+orm", "anonymous request, + the old outbox write (a SQLAlchemy INSERT, storage 0.2; same-run baseline)"),
    )
    for (base, case, label), kind in zip(rows, ("plain", "auth", "orm"), strict=True):
        print(
            f"{label}: median {cost[f'{base}_median_ms']:.2f} -> {cost[f'{case}_median_ms']:.2f} ms, ratio {cost[f'{kind}_ratio']:.3f}; "
            f"p10 {cost[f'{base}_p10_ms']:.2f} -> {cost[f'{case}_p10_ms']:.2f} ms, ratio {cost[f'{kind}_p10_ratio']:.3f}; "
            f"p95 {cost[f'{base}_p95_ms']:.2f} -> {cost[f'{case}_p95_ms']:.2f} ms"
        )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default=None, help="database URL (default: a fresh SQLite file)")
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--skip-fan-out", action="store_true", help="measure only the request latency")
    args = parser.parse_args()
    print(f"load average at start: {load_average()}")
    with tempfile.TemporaryDirectory(prefix="bcf-notifications-bench-") as scratch:
        base = Path(scratch)
        url = args.url or f"sqlite+aiosqlite:///{base / 'bench.db'}"
        if not args.skip_fan_out:
            fan = await fan_out(url, args.count, base)
            print(
                f"fan-out: {fan['count']} department notifications delivered to the local Bot API server in "
                f"{fan['all_delivered_s']:.2f} s (published in {fan['publish_s']:.2f} s, {fan['publish_per_s']:.0f}/s): "
                f"{fan['rate_per_s']:.0f}/s = {fan['vs_bot_limit_30_per_s']:.1f}x Telegram's 30/s per bot, "
                f"{fan['vs_group_limit_20_per_min']:.0f}x its 20/min per group, {fan['vs_chat_limit_1_per_s']:.0f}x its 1/s per chat; "
                f"at Telegram's group limit the same burst takes {fan['at_group_limit_s'] / 60:.0f} min to one group chat"
            )
        if args.url is None:
            url = f"sqlite+aiosqlite:///{base / 'latency.db'}"
        report_latency(await request_cost(url, args.rounds, base))
    print(f"load average at end: {load_average()}")


if __name__ == "__main__":
    asyncio.run(main())
