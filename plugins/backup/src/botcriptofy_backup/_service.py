"""The databases the plugin backs up, and what it does with them: back up, list, verify, restore, drill, watch staleness."""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from botcriptofy import Notification

from . import _sqlite
from ._keys import BackupKeyError, Keyring, load_keyring, load_pg_cipher_pass
from ._pgbackrest import PgBackRest, PgBackRestError, free_port
from ._sqlite import BackupError

if TYPE_CHECKING:
    from botcriptofy import Kernel

    from ._metrics import BackupMetrics
    from ._settings import BackupSettings

log = logging.getLogger("botcriptofy.backup")
RECIPIENT = "department:configuration"
FAILURES = (BackupError, BackupKeyError, PgBackRestError, OSError, ValueError)


class UnknownDatabase(LookupError):
    pass


class Target(Protocol):
    name: str
    engine: str

    async def backup(self, kind: str | None) -> dict[str, Any]: ...
    async def backups(self) -> list[dict[str, Any]]: ...
    async def verify(self, backup_id: str | None) -> dict[str, Any]: ...
    async def restore(
        self, target: Path, *, backup_id: str | None, kind: str, target_time: datetime | None, force: bool
    ) -> dict[str, Any]: ...
    async def drill(self, scratch: Path) -> dict[str, Any]: ...


def compare(source: dict[str, int], restored: dict[str, int]) -> tuple[dict[str, dict[str, Any]], bool]:
    tables = {
        name: {"source": source.get(name), "restored": restored.get(name), "match": source.get(name) == restored.get(name)}
        for name in sorted(set(source) | set(restored))
    }
    return tables, all(entry["match"] for entry in tables.values())


@dataclass
class SqliteTarget:
    name: str
    path: Path
    directory: Path
    keyring: Any  # () -> Keyring
    settings: Any  # () -> BackupSettings
    engine: str = "sqlite"

    def _keys(self) -> Keyring:
        return self.keyring()  # type: ignore[no-any-return]

    async def backup(self, kind: str | None) -> dict[str, Any]:
        # A SQLite backup is always a whole snapshot, whatever type was asked for the PostgreSQL side.
        settings = self.settings()
        made = await asyncio.to_thread(_sqlite.create, self.path, self.directory, self.name, self._keys(), level=settings.compression_level)
        removed = await asyncio.to_thread(_sqlite.expire, self.directory, self.name, settings.keep_last)
        return {**made.to_dict(), "expired": removed}

    async def backups(self) -> list[dict[str, Any]]:
        return [item.to_dict() for item in await asyncio.to_thread(_sqlite.listing, self.directory, self.name)]

    def _find(self, backup_id: str | None) -> Path:
        listed = _sqlite.listing(self.directory, self.name)
        if backup_id is None:
            if not listed:
                raise BackupError(f"{self.directory}: no backup of '{self.name}' yet")
            return listed[0].path
        path = self.directory / backup_id
        if "/" in backup_id or not path.is_file():
            raise LookupError(f"no backup '{backup_id}' of '{self.name}'")
        return path

    async def verify(self, backup_id: str | None) -> dict[str, Any]:
        keys = self._keys()
        if backup_id is not None:
            paths = [self._find(backup_id)]
        else:
            paths = sorted(self.directory.glob(f"*{_sqlite.SUFFIX}")) if self.directory.exists() else []
        results, valid = [], True
        for path in paths:
            try:
                results.append(await asyncio.to_thread(_sqlite.verify, path, keys))
            except (BackupError, BackupKeyError) as error:
                valid = False
                results.append({"id": path.name, "file": str(path), "valid": False, "error": str(error)})
        return {"database": self.name, "engine": self.engine, "valid": valid, "backups": results}

    async def restore(self, target: Path, *, backup_id: str | None, kind: str, target_time: datetime | None, force: bool) -> dict[str, Any]:
        if kind != "default" or target_time is not None:
            raise ValueError("SQLite restores a whole snapshot; point-in-time restores are for PostgreSQL")
        path = self._find(backup_id)
        return await asyncio.to_thread(_sqlite.restore, path, target, self._keys(), force=force)

    async def drill(self, scratch: Path) -> dict[str, Any]:
        path = self._find(None)
        source = await asyncio.to_thread(_sqlite.table_counts, self.path)
        target = scratch / f"{self.name}.sqlite"
        started = time.perf_counter()
        await asyncio.to_thread(_sqlite.restore, path, target, self._keys())
        integrity = await asyncio.to_thread(_sqlite.integrity, target)
        rto = time.perf_counter() - started
        restored = await asyncio.to_thread(_sqlite.table_counts, target)
        tables, match = compare(source, restored)
        return {
            "backup": path.name,
            "integrity": integrity,
            "rto_seconds": round(rto, 3),
            "restored_bytes": target.stat().st_size,
            "tables": tables,
            "ok": match and integrity == "ok",
        }


@dataclass
class PostgresTarget:
    name: str
    pg: PgBackRest
    settings: Any
    engine: str = "postgresql"
    stanza_ready: bool = False

    async def _ensure_stanza(self) -> None:
        if not self.stanza_ready:
            await self.pg.stanza_create()
            self.stanza_ready = True

    def choose(self, listed: list[dict[str, Any]], now: float) -> str:
        """Full when the last full is older than pg_full_every, differential past pg_diff_every, else incremental."""
        settings = self.settings()
        fulls = [b for b in listed if b["type"] == "full"]
        if not fulls or now - datetime.fromisoformat(fulls[0]["created_at"]).timestamp() >= settings.pg_full_every:
            return "full"
        bases = [b for b in listed if b["type"] in ("full", "diff")]
        if now - datetime.fromisoformat(bases[0]["created_at"]).timestamp() >= settings.pg_diff_every:
            return "diff"
        return "incr"

    async def backup(self, kind: str | None) -> dict[str, Any]:
        await self._ensure_stanza()
        if kind is None:
            kind = self.choose(await self.pg.backups(), time.time())
        return await self.pg.backup(kind)

    async def backups(self) -> list[dict[str, Any]]:
        return await self.pg.backups()

    async def verify(self, backup_id: str | None) -> dict[str, Any]:
        if backup_id is not None:
            raise ValueError("pgBackRest verifies the whole repository; leave out the backup id")
        try:
            report = await self.pg.verify()
        except PgBackRestError as error:
            return {"database": self.name, "engine": self.engine, "valid": False, "error": str(error)}
        return {**report, "engine": self.engine}

    async def restore(self, target: Path, *, backup_id: str | None, kind: str, target_time: datetime | None, force: bool) -> dict[str, Any]:
        if kind == "default" and target_time is not None:
            kind = "time"
        if force:
            raise ValueError("a PostgreSQL restore goes into an empty directory; force is for SQLite files")
        await self.pg.restore(target, kind=kind, target_time=target_time, label=backup_id)
        return {"database": self.name, "target": str(target), "type": kind, "backup": backup_id or "latest"}

    async def drill(self, scratch: Path) -> dict[str, Any]:
        pg = self.pg
        source = await pg.table_counts(pg.pg_socket_path, pg.pg_port)
        await pg.check()  # switch and archive the current WAL segment, so the restore reaches the counts above
        target = scratch / self.name
        port = free_port()
        started = time.perf_counter()
        await pg.restore(target)
        try:
            await pg.start_cluster(target, port)
            rto = time.perf_counter() - started
            restored = await pg.table_counts(target / "socket", port)
        finally:
            await pg.stop_cluster(target)
        latest = (await pg.backups())[0]
        tables, match = compare(source, restored)
        return {
            "backup": latest["id"],
            "rto_seconds": round(rto, 3),
            "restored_bytes": latest.get("source_bytes"),
            "tables": tables,
            "ok": match,
        }


@dataclass
class BackupService:
    kernel: Kernel
    metrics: BackupMetrics
    targets: dict[str, Target] = field(default_factory=dict)
    last_success: dict[str, float] = field(default_factory=dict)

    def settings(self) -> BackupSettings:
        return self.kernel.current().settings_for("backup")  # type: ignore[no-any-return]

    def target(self, name: str | None) -> list[Target]:
        if name is None:
            return list(self.targets.values())
        if name not in self.targets:
            raise UnknownDatabase(f"no database '{name}' is backed up here (known: {', '.join(self.targets) or 'none'})")
        return [self.targets[name]]

    async def run(self, name: str | None = None, kind: str | None = None) -> list[dict[str, Any]]:
        """Back up ``name`` (every database when None); a failure is counted, notified, and reported, never raised."""
        results = []
        for target in self.target(name):
            started = time.perf_counter()
            try:
                made = await target.backup(kind)
            except FAILURES as error:
                self.metrics.failures.labels(database=target.name).inc()
                log.error("backup of %s failed: %s", target.name, error)
                await self._notify(target.name, "backup.failed", f"Backup of {target.name} failed", str(error), "error")
                results.append({"database": target.name, "ok": False, "error": str(error)})
                continue
            now = time.time()
            self.last_success[target.name] = now
            self.metrics.last_success.labels(database=target.name).set(now)
            self.metrics.duration.labels(database=target.name).set(time.perf_counter() - started)
            if made.get("size_bytes") is not None:
                self.metrics.size.labels(database=target.name).set(made["size_bytes"])
            results.append({"database": target.name, "ok": True, "backup": made})
        return results

    async def refresh(self) -> None:
        """Read the last successful backup of every database from its repository (after a restart)."""
        for target in self.targets.values():
            try:
                listed = await target.backups()
            except FAILURES as error:
                log.warning("cannot list the backups of %s: %s", target.name, error)
                continue
            if listed:
                stamp = datetime.fromisoformat(listed[0]["created_at"]).timestamp()
                if stamp > self.last_success.get(target.name, 0):
                    self.last_success[target.name] = stamp
                    self.metrics.last_success.labels(database=target.name).set(stamp)

    async def stale(self) -> list[str]:
        """Notify the configuration department of each database without a successful backup within stale_after."""
        limit, now, found = self.settings().stale_after, time.time(), []
        for target in self.targets.values():
            last = self.last_success.get(target.name)
            if last is None or now - last > limit:
                found.append(target.name)
                since = "never" if last is None else datetime.fromtimestamp(last, UTC).isoformat(timespec="seconds")
                await self._notify(
                    target.name,
                    "backup.stale",
                    f"Backup of {target.name} is stale",
                    f"The last successful backup of {target.name} is {since}; backups are due every "
                    f"{self.settings().interval:.0f} s and stale after {limit:.0f} s.",
                    "error",
                )
        return found

    async def tick(self) -> dict[str, Any]:
        """One scheduled run: back up every database, then report the stale ones."""
        results = await self.run()
        return {"results": results, "stale": await self.stale()}

    async def _notify(self, database: str, category: str, subject: str, body: str, severity: str) -> None:
        hour = datetime.now(UTC).strftime("%Y%m%d%H")
        try:
            await self.kernel.current().notify(
                Notification(
                    recipient=RECIPIENT,
                    subject=subject,
                    body=body,
                    severity=severity,
                    category=category,
                    data={"database": database},
                    dedup_key=f"{category}:{database}:{hour}",
                )
            )
        except Exception:  # a notification that cannot go out must not hide the backup's own outcome
            log.exception("cannot notify %s of %s for %s", RECIPIENT, category, database)

    async def listing(self, name: str | None = None) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        for target in self.target(name):
            found.extend(await target.backups())
        return found

    def status(self) -> list[dict[str, Any]]:
        limit, now = self.settings().stale_after, time.time()
        out = []
        for target in self.targets.values():
            last = self.last_success.get(target.name)
            out.append(
                {
                    "database": target.name,
                    "engine": target.engine,
                    "last_success": None if last is None else datetime.fromtimestamp(last, UTC).isoformat(),
                    "stale": last is None or now - last > limit,
                }
            )
        return out

    async def verify(self, name: str | None = None, backup_id: str | None = None) -> dict[str, Any]:
        reports = [await target.verify(backup_id) for target in self.target(name)]
        return {"valid": all(report["valid"] for report in reports), "databases": reports}

    async def restore(
        self,
        name: str,
        target: Path,
        *,
        backup_id: str | None = None,
        kind: str = "default",
        target_time: datetime | None = None,
        force: bool = False,
    ) -> dict[str, Any]:
        [found] = self.target(name)
        return await found.restore(target, backup_id=backup_id, kind=kind, target_time=target_time, force=force)

    async def drill(self, name: str | None = None, *, keep: bool = False) -> dict[str, Any]:
        """Restore the latest backup of each database to a scratch location, compare row counts per table, report the RTO."""
        root = self.scratch_root()
        reports = []
        for target in self.target(name):
            scratch = root / f"{target.name}-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S%f')}"
            scratch.mkdir(parents=True, mode=0o700)
            if isinstance(target, PostgresTarget):
                target.pg._own(scratch)
            try:
                report = {"database": target.name, "engine": target.engine, **await target.drill(scratch)}
                self.metrics.drill_rto.labels(database=target.name).set(report["rto_seconds"])
            except FAILURES as error:
                report = {"database": target.name, "engine": target.engine, "ok": False, "error": str(error)}
            finally:
                if not keep:
                    shutil.rmtree(scratch, ignore_errors=True)
            report["scratch"] = str(scratch)
            reports.append(report)
        return {"ok": all(report["ok"] for report in reports), "databases": reports}

    def restore_root(self) -> Path:
        """Where restores asked for over HTTP go: callers name a new entry there, never a path of their choosing."""
        configured = self.settings().restore_directory
        return Path(configured) if configured else self.kernel.state_dir / "backup" / "restores"

    def scratch_root(self) -> Path:
        configured = self.settings().drill_directory
        return Path(configured) if configured else self.kernel.state_dir / "backup" / "drill"


def build(kernel: Kernel, metrics: BackupMetrics) -> BackupService:
    """The service for ``kernel``'s settings: the SQLite database (when there is one) and the pgBackRest stanza (when configured)."""
    settings: BackupSettings = kernel.settings_for("backup")
    service = BackupService(kernel=kernel, metrics=metrics)
    state = kernel.state_dir
    env = kernel.env

    def settings_now() -> BackupSettings:
        return kernel.current().settings_for("backup")  # type: ignore[no-any-return]

    sqlite_path = sqlite_source(kernel, settings)
    if sqlite_path is not None:
        directory = Path(settings.directory) if settings.directory else state / "backup" / "sqlite"
        service.targets[settings.sqlite_name] = SqliteTarget(
            name=settings.sqlite_name,
            path=sqlite_path,
            directory=directory,
            keyring=lambda: load_keyring(env, state),
            settings=settings_now,
        )
    if settings.pg_stanza:
        home = state / "backup" / "pgbackrest"
        pg = PgBackRest(
            stanza=settings.pg_stanza,
            pg_data=Path(settings.pg_data),
            repo_path=Path(settings.pg_repo_path) if settings.pg_repo_path else home / "repo",
            config_path=Path(settings.pg_config_path) if settings.pg_config_path else home / "pgbackrest.conf",
            cipher_pass=lambda: load_pg_cipher_pass(env, state),
            pg_port=settings.pg_port,
            pg_socket_path=settings.pg_socket_path,
            pg_user=settings.pg_user,
            pg_database=settings.pg_database,
            run_as=settings.pg_run_as,
            retention_full=settings.pg_retention_full,
            retention_diff=settings.pg_retention_diff,
            compress_type=settings.pg_compress_type,
            process_max=settings.pg_process_max,
            archive_timeout=settings.pg_archive_timeout,
            pg_bin=Path(settings.pg_bin),
        )
        service.targets[settings.pg_stanza] = PostgresTarget(name=settings.pg_stanza, pg=pg, settings=settings_now)
    return service


def sqlite_source(kernel: Kernel, settings: BackupSettings) -> Path | None:
    if settings.sqlite_path == "-":
        return None
    if settings.sqlite_path:
        return Path(settings.sqlite_path)
    try:
        database = kernel.database()
    except Exception:  # no storage plugin: nothing embedded to back up
        return None
    if database.dialect != "sqlite":
        return None
    _, sep, rest = str(database.url).partition(":///")
    found = rest.split("?", 1)[0]
    return Path(found) if sep and found and found != ":memory:" else None
