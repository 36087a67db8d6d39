"""``botcriptofy backup now|list|verify|restore|drill|new-key|pg-setup``."""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from botcriptofy import Kernel, pass_kernel

from ._keys import new_key_entry
from ._service import FAILURES, PostgresTarget, UnknownDatabase
from ._state import service_of


def _print(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def absolute(path: Path) -> Path:
    return Path(os.path.abspath(path))


def _service(kernel: Kernel) -> Any:
    service = service_of(kernel)
    if not service.targets:
        raise click.ClickException("no database to back up: the storage database is not SQLite and backup.pg_stanza is empty")
    return service


@click.group()
def backup() -> None:
    """Encrypted backups of the databases (the backup plugin)."""


@backup.command("now")
@click.option("--database", default=None, help="Only this database (default: every one).")
@click.option("--type", "kind", type=click.Choice(["full", "diff", "incr"]), default=None, help="PostgreSQL backup type (default: by age).")
@pass_kernel
async def now_command(kernel: Kernel, database: str | None, kind: str | None) -> None:
    """Back up now; exit 1 when any database failed."""
    try:
        results = await _service(kernel).run(database, kind)
    except UnknownDatabase as error:
        raise click.ClickException(str(error)) from None
    for item in results:
        if item["ok"]:
            made = item["backup"]
            click.echo(f"{item['database']}: {made['type']} backup {made['id']} ({made.get('size_bytes')} bytes)")
        else:
            click.echo(f"{item['database']}: FAILED -- {item['error']}", err=True)
    if not all(item["ok"] for item in results):
        raise SystemExit(1)


@backup.command("list")
@click.option("--database", default=None)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_kernel
async def list_command(kernel: Kernel, database: str | None, as_json: bool) -> None:
    """The backups of each database, newest first."""
    service = _service(kernel)
    try:
        listed = await service.listing(database)
    except UnknownDatabase as error:
        raise click.ClickException(str(error)) from None
    if as_json:
        _print({"databases": service.status(), "backups": listed})
        return
    for item in listed:
        click.echo(f"{item['database']}\t{item['type']}\t{item['id']}\t{item['created_at']}\t{item.get('size_bytes')}")


@backup.command("verify")
@click.option("--database", default=None)
@click.option("--backup", "backup_id", default=None, help="One SQLite backup (default: every one).")
@pass_kernel
async def verify_command(kernel: Kernel, database: str | None, backup_id: str | None) -> None:
    """Decrypt and integrity-check SQLite backups, pgBackRest ``verify`` the repository; exit 1 naming each bad file."""
    try:
        report = await _service(kernel).verify(database, backup_id)
    except (UnknownDatabase, LookupError, ValueError) as error:
        raise click.ClickException(str(error)) from None
    problems: list[str] = []
    for entry in report["databases"]:
        if "backups" in entry:  # SQLite: one line per file
            for item in entry["backups"]:
                click.echo(f"{entry['database']}: {item['id']}: {'ok' if item['valid'] else 'FAILED -- ' + item['error']}")
                if not item["valid"]:
                    problems.append(item["error"])
        else:  # PostgreSQL: the repository as a whole
            click.echo(f"{entry['database']}: {'ok' if entry['valid'] else 'FAILED -- ' + entry['error']}")
            if not entry["valid"]:
                problems.append(entry["error"])
    if problems:
        raise click.ClickException("; ".join(problems))


@backup.command("restore")
@click.option("--database", required=True)
@click.option("--target", required=True, type=click.Path(path_type=Path), help="A new SQLite file, or an empty directory for PostgreSQL.")
@click.option("--backup", "backup_id", default=None, help="Backup id (default: the latest).")
@click.option("--time", "target_time", default=None, help="PostgreSQL: restore to this point in time (ISO 8601 with a zone).")
@click.option("--immediate", is_flag=True, help="PostgreSQL: stop at the end of the backup, replaying no later WAL.")
@click.option("--force", is_flag=True, help="SQLite: overwrite the target file.")
@pass_kernel
async def restore_command(
    kernel: Kernel, database: str, target: Path, backup_id: str | None, target_time: str | None, immediate: bool, force: bool
) -> None:
    """Restore a backup into a new location (the latest point by default); never over the running database."""
    when = None
    if target_time:
        when = datetime.fromisoformat(target_time)
        if when.tzinfo is None:
            raise click.BadParameter("give a time zone (2026-01-31T12:00:00+00:00)", param_hint="--time")
    kind = "time" if when else "immediate" if immediate else "default"
    try:
        result = await _service(kernel).restore(database, absolute(target), backup_id=backup_id, kind=kind, target_time=when, force=force)
    except (LookupError, *FAILURES) as error:
        raise click.ClickException(str(error)) from None
    await kernel.audit(
        "backup.restored", target=f"backup:{database}", details={"to": str(target), "type": kind, "backup": backup_id or "latest"}
    )
    click.echo(f"restored {result['database']} into {result['target']}")


@backup.command("drill")
@click.option("--database", default=None)
@click.option("--keep", is_flag=True, help="Keep the restored copy in the scratch directory.")
@click.option("--json", "as_json", is_flag=True)
@pass_kernel
async def drill_command(kernel: Kernel, database: str | None, keep: bool, as_json: bool) -> None:
    """Restore the latest backup to a scratch location, compare row counts per table with the source and report the RTO.

    Exits 1 when a table's count differs or a restore fails.
    """
    try:
        report = await _service(kernel).drill(database, keep=keep)
    except UnknownDatabase as error:
        raise click.ClickException(str(error)) from None
    if as_json:
        _print(report)
    else:
        for entry in report["databases"]:
            if "error" in entry:
                click.echo(f"{entry['database']}: FAILED -- {entry['error']}")
                continue
            bad = [name for name, table in entry["tables"].items() if not table["match"]]
            click.echo(
                f"{entry['database']}: backup {entry['backup']} restored in {entry['rto_seconds']:.2f} s (RTO), "
                f"{len(entry['tables'])} tables, " + ("row counts match" if not bad else f"row counts differ: {', '.join(bad)}")
            )
    if not report["ok"]:
        raise SystemExit(1)


@backup.command("new-key")
@click.argument("key_id")
def new_key_command(key_id: str) -> None:
    """Print a new key entry; put it FIRST in BCF_BACKUP_KEYS and keep the older ones after it."""
    click.echo(new_key_entry(key_id))


@backup.command("pg-setup")
@pass_kernel
async def pg_setup_command(kernel: Kernel) -> None:
    """Write pgbackrest.conf, create the stanza, and print the archive settings the cluster needs."""
    service = _service(kernel)
    targets = [target for target in service.targets.values() if isinstance(target, PostgresTarget)]
    if not targets:
        raise click.ClickException("backup.pg_stanza is empty")
    for target in targets:
        target.pg.write_config()
        click.echo(f"# {target.name}: written {target.pg.config_path}; add to postgresql.conf (archive_mode needs a restart):")
        click.echo("wal_level = replica\narchive_mode = on")
        click.echo(f"archive_command = '{target.pg.archive_command}'")
        try:
            await target.pg.stanza_create()
            await target.pg.check()
        except Exception as error:
            raise click.ClickException(f"{target.name}: {error}") from None
        click.echo(f"# {target.name}: stanza created, check passed")
