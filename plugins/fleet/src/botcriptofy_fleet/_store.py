"""The fleet's configuration store in PostgreSQL: versions, LISTEN/NOTIFY, heartbeats and the fleet's status."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import asyncpg  # type: ignore[import-untyped]

from botcriptofy import SharedVersion

log = logging.getLogger("botcriptofy.fleet")

CHANNEL = "botcriptofy_fleet_config"
LOCK = 0x62636679  # pg_advisory_xact_lock key: one publish (and one table creation) at a time
_TABLES = """
CREATE TABLE IF NOT EXISTS botcriptofy_fleet_versions (
    version    BIGSERIAL PRIMARY KEY,
    created_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    source     TEXT NOT NULL,
    actor      TEXT NOT NULL,
    note       TEXT NOT NULL,
    files      JSONB NOT NULL,
    settings   JSONB NOT NULL,
    diff       JSONB NOT NULL
);
CREATE TABLE IF NOT EXISTS botcriptofy_fleet_workers (
    host         TEXT NOT NULL,
    pid          INTEGER NOT NULL,
    report       JSONB NOT NULL,
    heartbeat_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (host, pid)
);
"""


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict) and data:
        found: dict[str, Any] = {}
        for key, value in data.items():
            found.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return found
    return {prefix: data}


def settings_diff(previous: Mapping[str, Any], current: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``{dotted key: {"from": old, "to": new}}`` of two masked settings documents."""
    old, new = _flatten(dict(previous)), _flatten(dict(current))
    missing = object()
    return {
        key: {"from": old.get(key), "to": new.get(key)}
        for key in sorted(old.keys() | new.keys())
        if old.get(key, missing) != new.get(key, missing)
    }


def _version(row: asyncpg.Record) -> SharedVersion:
    created: datetime = row["created_at"]
    return SharedVersion(
        version=int(row["version"]),
        files=json.loads(row["files"]),
        created_at=created.isoformat(timespec="milliseconds"),
        source=row["source"],
        actor=row["actor"],
        note=row["note"],
        diff=json.loads(row["diff"]),
    )


class PostgresConfigStore:
    """The :class:`botcriptofy.ConfigStore` of the fleet plugin: one PostgreSQL database shared by every host."""

    def __init__(self, dsn: str, *, host: str, reconcile_interval: float, heartbeat_timeout: float) -> None:
        self.dsn = dsn
        self.host = host
        self.reconcile_interval = reconcile_interval
        self.heartbeat_timeout = heartbeat_timeout
        self.listening = False
        # False from a (re)connection until the runtime reports back (its heartbeat follows its reconcile).
        self.synced = False
        self.last_report: dict[str, Any] = {}
        self.disconnected_since: float | None = None
        self._pool: asyncpg.Pool | None = None
        self._callbacks: list[Callable[[], None]] = []
        self._stop = asyncio.Event()
        self._listener: asyncio.Task[None] | None = None

    # -- life -----------------------------------------------------------------------------

    async def open(self) -> None:
        self._pool = await asyncpg.create_pool(self.dsn, min_size=1, max_size=3, timeout=5, command_timeout=10)
        async with self._pool.acquire() as connection, connection.transaction():
            await connection.execute("SELECT pg_advisory_xact_lock($1)", LOCK)
            await connection.execute(_TABLES)
        connected = asyncio.Event()
        self._listener = asyncio.create_task(self._listen(connected), name="botcriptofy-fleet-listener")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                await connected.wait()

    async def close(self) -> None:
        self._stop.set()
        if self._listener is not None:
            self._listener.cancel()
            await asyncio.gather(self._listener, return_exceptions=True)
            self._listener = None
        if self._pool is not None:
            with contextlib.suppress(Exception):
                async with self._pool.acquire() as connection:
                    await connection.execute("DELETE FROM botcriptofy_fleet_workers WHERE host = $1 AND pid = $2", self.host, os.getpid())
            await self._pool.close()
            self._pool = None

    async def _listen(self, connected: asyncio.Event) -> None:
        """Keep one connection LISTENing; on loss reconnect, then wake the subscribers (they reconcile)."""
        delay = 0.2
        while not self._stop.is_set():
            connection: asyncpg.Connection | None = None
            try:
                connection = await asyncpg.connect(self.dsn, timeout=5, server_settings={"application_name": "botcriptofy-fleet-listen"})
                await connection.add_listener(CHANNEL, self._notified)
                self.listening, self.synced, self.disconnected_since, delay = True, False, None, 0.2
                connected.set()
                self._wake()  # a reconnect may have missed notifications
                while not self._stop.is_set():
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(1.0):
                            await self._stop.wait()
                    await connection.execute("SELECT 1")  # notices a dropped connection within a second
            except asyncio.CancelledError:
                raise
            except Exception as error:
                if self.listening or self.disconnected_since is None:
                    log.warning("fleet: the LISTEN connection to PostgreSQL is down (reconnecting): %s", error)
                    self.disconnected_since = time.time()
                self.listening = self.synced = False
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._stop.wait()
                delay = min(delay * 2, 2.0)
            finally:
                if connection is not None:
                    with contextlib.suppress(Exception):
                        await connection.close(timeout=2)
        self.listening = False

    def _notified(self, *_: Any) -> None:
        self._wake()

    def _wake(self) -> None:
        for callback in list(self._callbacks):
            callback()

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("the fleet's configuration store is closed")
        return self._pool

    # -- botcriptofy.ConfigStore ----------------------------------------------------------

    def subscribe(self, callback: Callable[[], None]) -> None:
        self._callbacks.append(callback)

    async def current(self) -> SharedVersion | None:
        row = await self.pool.fetchrow("SELECT * FROM botcriptofy_fleet_versions ORDER BY version DESC LIMIT 1")
        return _version(row) if row is not None else None

    async def get(self, version: int) -> SharedVersion | None:
        row = await self.pool.fetchrow("SELECT * FROM botcriptofy_fleet_versions WHERE version = $1", version)
        return _version(row) if row is not None else None

    async def history(self, limit: int) -> list[SharedVersion]:
        rows = await self.pool.fetch("SELECT * FROM botcriptofy_fleet_versions ORDER BY version DESC LIMIT $1", limit)
        return [_version(row) for row in rows]

    async def publish(
        self, files: Mapping[str, str], *, settings: Mapping[str, Any], source: str, actor: str, note: str = "", first: bool = False
    ) -> SharedVersion:
        async with self.pool.acquire() as connection, connection.transaction():
            await connection.execute("SELECT pg_advisory_xact_lock($1)", LOCK)
            latest = await connection.fetchrow("SELECT * FROM botcriptofy_fleet_versions ORDER BY version DESC LIMIT 1")
            if first and latest is not None:
                return _version(latest)
            previous = json.loads(latest["settings"]) if latest is not None else {}
            row = await connection.fetchrow(
                "INSERT INTO botcriptofy_fleet_versions (source, actor, note, files, settings, diff) "
                "VALUES ($1, $2, $3, $4::jsonb, $5::jsonb, $6::jsonb) RETURNING *",
                source,
                actor,
                note,
                json.dumps(dict(files), sort_keys=True),
                json.dumps(dict(settings), sort_keys=True, default=str),
                json.dumps(settings_diff(previous, settings), default=str),
            )
            await connection.execute("SELECT pg_notify($1, $2)", CHANNEL, str(row["version"]))
        return _version(row)

    async def heartbeat(self, report: Mapping[str, Any]) -> None:
        self.last_report = dict(report)
        self.synced = self.listening
        body = json.dumps({**report, "host": self.host}, sort_keys=True, default=str)
        async with self.pool.acquire() as connection:
            await connection.execute(
                "INSERT INTO botcriptofy_fleet_workers (host, pid, report, heartbeat_at) VALUES ($1, $2, $3::jsonb, clock_timestamp()) "
                "ON CONFLICT (host, pid) DO UPDATE SET report = EXCLUDED.report, heartbeat_at = EXCLUDED.heartbeat_at",
                self.host,
                int(report.get("pid") or os.getpid()),
                body,
            )
            await connection.execute(
                "DELETE FROM botcriptofy_fleet_workers WHERE heartbeat_at < clock_timestamp() - make_interval(secs => $1)",
                self.heartbeat_timeout,
            )

    async def status(self) -> dict[str, Any]:
        current = await self.pool.fetchval("SELECT max(version) FROM botcriptofy_fleet_versions")
        rows = await self.pool.fetch(
            "SELECT host, pid, report, heartbeat_at, extract(epoch FROM clock_timestamp() - heartbeat_at) AS age "
            "FROM botcriptofy_fleet_workers WHERE heartbeat_at >= clock_timestamp() - make_interval(secs => $1) ORDER BY host, pid",
            self.heartbeat_timeout,
        )
        hosts: dict[str, dict[str, Any]] = {}
        for row in rows:
            report = json.loads(row["report"])
            worker = {
                "pid": row["pid"],
                "config_version": report.get("config_version"),
                "generation": report.get("generation"),
                "ready": report.get("ready"),
                "last_heartbeat": row["heartbeat_at"].isoformat(timespec="milliseconds"),
                "seconds_since_heartbeat": round(float(row["age"]), 3),
                "applied_at": report.get("applied_at"),
                "plugins": report.get("plugins", {}),
                "restart_pending": sorted(name for name, plugin in report.get("plugins", {}).items() if plugin.get("restart_pending")),
                "refused_versions": report.get("refused_versions", {}),
                "refused_plugins": report.get("refused", {}),
                "not_started": report.get("not_started", {}),
                "drift": report.get("drift"),
            }
            host = hosts.setdefault(row["host"], {"host": row["host"], "workers": []})
            host["workers"].append(worker)
        for host in hosts.values():
            workers = host["workers"]
            host["config_versions"] = sorted({w["config_version"] for w in workers if w["config_version"] is not None})
            host["in_sync"] = host["config_versions"] == [current]
            host["refused_versions"] = {number: reason for w in workers for number, reason in w["refused_versions"].items()}
            host["drift"] = next((w["drift"] for w in workers if w["drift"]), None)
        return {"current_version": current, "heartbeat_timeout": self.heartbeat_timeout, "hosts": list(hosts.values())}
