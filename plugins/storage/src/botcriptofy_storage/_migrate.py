"""Per-plugin Alembic migrations, run in process on the plugin's engine.

Each enabled plugin that implements ``register_migrations`` owns an Alembic script directory
(``versions/`` plus ``script.py.mako``) and its own version table, ``alembic_version_<plugin>``.
The storage plugin supplies the Alembic environment itself (no ``alembic.ini``, no ``env.py``):
the connection, the plugin's ``target_metadata`` and version table. Inside a migration,
``context.config.attributes["botcriptofy"]`` is a :class:`MigrationHelpers`.

Upgrades take a lock first (an advisory lock on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite), so
workers starting together upgrade one after the other; each plugin upgrades in one transaction.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alembic.autogenerate import RevisionContext
from alembic.config import Config
from alembic.runtime.environment import EnvironmentContext
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection

from botcriptofy import BotCriptoFyError, Migrations, PluginError

from ._engine import SQLITE_BEGIN, sqlite_pragma_outside_transaction
from ._rls import apply_row_level_security
from ._timeseries import ensure_time_series

if TYPE_CHECKING:
    from botcriptofy import Kernel

STORAGE = "storage"
_LOCK = "SELECT pg_advisory_xact_lock(hashtext('botcriptofy.storage.migrate'))"


class MigrationError(BotCriptoFyError):
    """A plugin's migrations failed; the plugin's schema stays at its previous revision."""

    def __init__(self, plugin: str, reason: str) -> None:
        self.plugin = plugin
        super().__init__(
            f"the migrations of plugin '{plugin}' failed and were rolled back: {reason.strip()} "
            f"-- fix the migration, or disable the plugin with plugins.disabled = ['{plugin}']"
        )


@dataclass(frozen=True, slots=True)
class PluginMigrations:
    """One plugin's migrations."""

    plugin: str
    directory: Path
    metadata: Any = None

    @property
    def version_table(self) -> str:
        return version_table(self.plugin)

    @property
    def key(self) -> tuple[str, str]:
        return self.plugin, str(self.directory)


@dataclass(frozen=True, slots=True)
class Revisions:
    """Where a plugin's schema is: ``current`` revisions in the database and ``heads`` of its scripts."""

    plugin: str
    current: tuple[str, ...]
    heads: tuple[str, ...]
    before: tuple[str, ...] = ()

    @property
    def up_to_date(self) -> bool:
        return set(self.current) == set(self.heads)


@dataclass(frozen=True, slots=True)
class MigrationHelpers:
    """Given to migration scripts as ``context.config.attributes["botcriptofy"]``."""

    connection: Connection
    plugin: str

    @property
    def dialect(self) -> str:
        return self.connection.dialect.name

    def ensure_time_series(
        self, table: str, time_column: str, *, tenant_column: str | None = "tenant_id", chunk_interval: str | timedelta | None = None
    ) -> str:
        """Make ``table`` a hypertable (TimescaleDB) or an indexed table; see ``Database.ensure_time_series``."""
        return ensure_time_series(self.connection, table, time_column, tenant_column=tenant_column, chunk_interval=chunk_interval)


def version_table(plugin: str) -> str:
    return "alembic_version_" + re.sub(r"[^a-z0-9_]", "_", plugin.lower())


async def collect(kernel: Kernel) -> list[PluginMigrations]:
    """Ask every enabled plugin for its migrations: the storage plugin's first, then by plugin name."""
    found: list[PluginMigrations] = []
    for impl in kernel.hook.register_migrations.get_hookimpls():
        name = impl.plugin_name
        declared = await kernel.call_plugin(name, "register_migrations", kernel=kernel)
        if declared is None:
            continue
        if not isinstance(declared, Migrations):
            raise PluginError(
                name,
                f"returned {type(declared).__name__}, not Migrations",
                hook="register_migrations",
                fix="return botcriptofy.Migrations(directory=Path(__file__).parent / 'migrations', metadata=Base.metadata).",
            )
        directory = Path(declared.directory)
        if not (directory / "versions").is_dir():
            raise PluginError(
                name,
                f"its migrations directory {directory} has no versions/ folder",
                hook="register_migrations",
                fix="point Migrations.directory at an Alembic script directory (versions/ and script.py.mako).",
            )
        found.append(PluginMigrations(name, directory, declared.metadata))
    found.sort(key=lambda item: (item.plugin != STORAGE, item.plugin))
    return found


def _config(migrations: PluginMigrations, connection: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrations.directory))
    config.attributes["connection"] = connection
    config.attributes["botcriptofy"] = MigrationHelpers(connection, migrations.plugin)
    return config


def _configure(env: EnvironmentContext, connection: Connection, migrations: PluginMigrations, **options: Any) -> None:
    env.configure(
        connection=connection,
        target_metadata=migrations.metadata,
        version_table=migrations.version_table,
        render_as_batch=connection.dialect.name == "sqlite",
        **options,
    )


# Each migrations directory's heads, keyed by the directory and its revision files' (name, mtime): Alembic
# compiles every revision script to find them (about 60 ms with every first-party plugin), and the
# readiness check asks on the event loop.
_HEADS: dict[tuple[str, frozenset[tuple[str, int]]], tuple[str, ...]] = {}


def script_heads(migrations: PluginMigrations, connection: Connection) -> tuple[str, ...]:
    """The head revisions of ``migrations``' scripts, read again only when a revision file was added, removed or changed."""
    versions = migrations.directory / "versions"
    files = frozenset((path.name, path.stat().st_mtime_ns) for path in versions.glob("*.py")) if versions.is_dir() else frozenset()
    key = (str(migrations.directory), files)
    heads = _HEADS.get(key)
    if heads is None:
        heads = _HEADS[key] = tuple(sorted(ScriptDirectory.from_config(_config(migrations, connection)).get_heads()))
    return heads


def current_revisions(connection: Connection, migrations: PluginMigrations) -> Revisions:
    context = MigrationContext.configure(connection, opts={"version_table": migrations.version_table})
    return Revisions(migrations.plugin, tuple(sorted(context.get_current_heads())), script_heads(migrations, connection))


def _upgrade_one(connection: Connection, migrations: PluginMigrations, target: str) -> Revisions:
    config = _config(migrations, connection)
    script = ScriptDirectory.from_config(config)

    def steps(revision: Any, _context: Any) -> Any:
        return script._upgrade_revs(target, revision)

    with EnvironmentContext(config, script, fn=steps, destination_rev=target) as env:
        _configure(env, connection, migrations)
        context = env.get_context()
        before = tuple(sorted(context.get_current_heads()))
        env.run_migrations()
        after = tuple(sorted(context.get_current_heads()))
    return Revisions(migrations.plugin, after, tuple(sorted(script.get_heads())), before)


def upgrade_all(
    connection: Connection,
    plans: list[PluginMigrations],
    *,
    rls_role: str = "",
    declared: Mapping[str, str | None] | None = None,
    manage_role: bool = True,
    target: str = "heads",
    key: bytes | None = None,
) -> list[Revisions]:
    """Upgrade every plugin in ``plans`` that is behind (each in its own locked transaction), then bring row-level security up to date.

    Plugins already at head are only read: an upgrade with nothing to do issues no DDL and takes no lock.
    """
    sqlite = connection.dialect.name == "sqlite"
    with connection.begin():
        found = {plan.key: current_revisions(connection, plan) for plan in plans}
    pending = [plan for plan in plans if target != "heads" or not found[plan.key].up_to_date]
    done: dict[tuple[str, str], Revisions] = {}
    if pending and sqlite:
        # Batch migrations rebuild tables; with foreign keys on, dropping the old copy would cascade.
        connection.execution_options(**{SQLITE_BEGIN: "IMMEDIATE"})
        sqlite_pragma_outside_transaction(connection, "PRAGMA foreign_keys=OFF")
    try:
        for migrations in pending:
            with connection.begin():
                if not sqlite:
                    connection.execute(text(_LOCK))
                try:
                    done[migrations.key] = _upgrade_one(connection, migrations, target)
                except Exception as error:
                    raise MigrationError(migrations.plugin, str(error)) from error
                if sqlite:
                    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
                    if broken:
                        raise MigrationError(migrations.plugin, f"rows break foreign keys afterwards: {broken[:5]}")
    finally:
        if pending and sqlite:
            sqlite_pragma_outside_transaction(connection, "PRAGMA foreign_keys=ON")
    if not sqlite:
        try:
            with connection.begin():
                apply_row_level_security(connection, declared or {}, rls_role, manage_role=manage_role, key=key)
        except Exception as error:
            raise BotCriptoFyError(security_failure(error, rls_role)) from error
    results = []
    for plan in plans:
        result = done.get(plan.key)
        if result is None:
            before = found[plan.key]
            result = Revisions(plan.plugin, before.current, before.heads, before.current)
        results.append(result)
    return results


def security_failure(error: BaseException, rls_role: str) -> str:
    """Say why row-level security could not be brought up to date, naming the real cause (privileges, a lock, a deadlock)."""
    state = sqlstate(getattr(error, "orig", None) or error)
    reason = str(getattr(error, "orig", None) or error).strip()
    role = rls_role or "botcriptofy_app"
    if state == "42501":
        return (
            f"row-level security could not be set up: {reason} -- the migrations' login role (storage.migrations_url, else "
            f"storage.url) must own the tables and, for rls_role '{rls_role}', be able to create that role or already be a "
            f"member of it (as a superuser: CREATE ROLE {role} NOLOGIN; GRANT {role} TO <login role>; or run "
            "`botcriptofy db create-roles`), or set storage.rls_role = ''"
        )
    if state in ("40P01", "55P03"):
        what = "deadlocked with" if state == "40P01" else "timed out waiting for table locks held by"
        return (
            f"row-level security could not be set up: the upgrade {what} other transactions ({reason}); nothing was "
            "changed -- run `botcriptofy db upgrade` again, preferably before workers take traffic"
        )
    return f"row-level security could not be set up: {type(error).__name__}: {reason}"


def sqlstate(error: BaseException | None) -> str:
    """The SQLSTATE of a database error (looking through the driver's wrappers), or ''."""
    for _ in range(4):
        if error is None:
            break
        state = getattr(error, "sqlstate", None) or getattr(error, "pgcode", None)
        if isinstance(state, str) and state:
            return state
        error = error.__cause__
    return ""


def current_all(connection: Connection, plans: list[PluginMigrations]) -> list[Revisions]:
    with connection.begin():
        return [current_revisions(connection, migrations) for migrations in plans]


def make_revision(
    connection: Connection, migrations: PluginMigrations, message: str, *, autogenerate: bool = False, rev_id: str | None = None
) -> list[Path]:
    """Write a new revision script into the plugin's ``versions/``; with ``autogenerate``, diff its metadata against the database."""
    config = _config(migrations, connection)
    script = ScriptDirectory.from_config(config)
    if not (migrations.directory / "script.py.mako").is_file():
        raise FileNotFoundError(f"{migrations.directory / 'script.py.mako'} is missing: copy the one of the storage plugin's migrations")
    arguments = {
        "message": message,
        "autogenerate": autogenerate,
        "sql": False,
        "head": "head",
        "splice": False,
        "branch_label": None,
        "version_path": None,
        "rev_id": rev_id,
        "depends_on": None,
    }
    revision = RevisionContext(config, script, arguments)
    if autogenerate:
        if migrations.metadata is None:
            raise ValueError(f"plugin '{migrations.plugin}' gives no metadata in Migrations(metadata=...), so there is nothing to compare")
        owned = set(migrations.metadata.tables)

        def only_owned(name: str | None, kind: str, _parents: Any) -> bool:
            return kind != "table" or name in owned

        def steps(rev: Any, context: Any) -> list[Any]:
            revision.run_autogenerate(rev, context)
            return []

        with (
            connection.begin(),
            EnvironmentContext(config, script, fn=steps, template_args=revision.template_args, revision_context=revision) as env,
        ):
            _configure(env, connection, migrations, include_name=only_owned)
            env.run_migrations()
    return [Path(made.path) for made in revision.generate_scripts() if made is not None]
