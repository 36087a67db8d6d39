"""Per-plugin migrations: own version tables, automatic and explicit upgrades, live-enabled plugins, the db commands."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import inspect, select, text

import botcriptofy_storage
from botcriptofy import Migrations, Runtime, hookimpl
from botcriptofy.testing import render_settings

from .storage_sample import MIGRATIONS, Base, Note, SamplePlugin


async def _tables(db) -> set[str]:
    async with db.engine.connect() as connection:
        return set(await connection.run_sync(lambda sync: inspect(sync).get_table_names()))


async def _version(db, plugin: str) -> list[str]:
    async with db.engine.connect() as connection:
        return list((await connection.execute(text(f"SELECT version_num FROM alembic_version_{plugin}"))).scalars())


async def test_every_enabled_plugin_is_upgraded_at_start_with_its_own_version_table(storage_kernel):
    harness = await storage_kernel()
    db = harness.kernel.database()
    tables = await _tables(db)
    assert {"botcriptofy_outbox", "botcriptofy_outbox_delivery", "sample_notes", "sample_comments", "sample_readings"} <= tables
    assert {"alembic_version_storage", "alembic_version_sample"} <= tables
    assert "alembic_version" not in tables
    assert await _version(db, "storage") == ["storage_0003"]
    assert await _version(db, "sample") == ["sample_0002"]


async def test_upgrading_again_changes_nothing(storage_kernel):
    harness = await storage_kernel()
    state = harness.kernel.stash[botcriptofy_storage._state.STATE]
    results = await state.migrate(harness.kernel, only_new=False)
    assert [(r.plugin, r.before, r.current, r.up_to_date) for r in results] == [
        ("storage", ("storage_0003",), ("storage_0003",), True),
        ("sample", ("sample_0002",), ("sample_0002",), True),
    ]


async def test_without_auto_upgrade_nothing_is_created(storage_kernel):
    harness = await storage_kernel(auto_upgrade=False, relay_enabled=False)
    assert await _tables(harness.kernel.database()) == set()


async def test_a_plugin_enabled_live_gets_its_tables_before_its_first_session(storage_kernel):
    harness = await storage_kernel()
    late = LatePlugin()
    harness.runtime.extra_plugins["late"] = late  # as if just installed
    result = await harness.runtime.rescan(source="test")
    assert result.applied and result.changes["started"] == ["late"]
    assert late.rows == 0  # its start-up could already read its own table
    assert "late_things" in await _tables(harness.kernel.database())
    assert await _version(harness.kernel.database(), "late") == ["late_0001"]


class LatePlugin:
    """Owns a table and reads it at start-up: its migrations must have run by then."""

    rows: int | None = None

    @hookimpl
    def register_migrations(self, kernel):
        return Migrations(directory=Path(__file__).parent / "storage_late_migrations")

    @hookimpl
    async def startup(self, kernel):
        async with kernel.database().session(system=True) as session:
            self.rows = (await session.execute(text("SELECT count(*) FROM late_things"))).scalar()


async def test_a_broken_migration_names_its_plugin(kernel_harness, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(MIGRATIONS, broken)
    (broken / "versions" / "0003_broken.py").write_text(
        '"""Broken."""\nfrom alembic import op\nrevision = "sample_0003"\ndown_revision = "sample_0002"\n'
        "branch_labels = None\ndepends_on = None\n\n\ndef upgrade():\n    op.execute('SELECT * FROM no_such_table')\n\n\n"
        "def downgrade():\n    pass\n"
    )

    class Broken(SamplePlugin):
        @hookimpl
        def register_migrations(self, kernel):
            return Migrations(directory=broken, metadata=Base.metadata)

    harness = await kernel_harness(plugins={"storage": botcriptofy_storage, "sample": Broken()},
                                   settings={"storage": {"url": f"sqlite+aiosqlite:///{tmp_path / 'b.db'}"}})
    error = harness.runtime.plugins["storage"].error
    assert "migrations of plugin 'sample' failed" in error and "no_such_table" in error
    assert "plugins.disabled = ['sample']" in error


async def test_a_migrations_directory_without_versions_is_refused(kernel_harness, tmp_path):
    class Lost:
        @hookimpl
        def register_migrations(self, kernel):
            return Migrations(directory=tmp_path / "nowhere")

    harness = await kernel_harness(plugins={"storage": botcriptofy_storage, "lost": Lost()},
                                   settings={"storage": {"url": f"sqlite+aiosqlite:///{tmp_path / 'l.db'}"}})
    assert "has no versions/ folder" in harness.runtime.plugins["storage"].error


# -- the db commands -----------------------------------------------------------------------------


@pytest.fixture
def cli(monkeypatch, tmp_path):
    """The botcriptofy command line over storage and the sample plugin only, with the settings in tmp_path."""
    from botcriptofy import Runtime, _cli

    settings_dir = tmp_path / "settings"
    settings_dir.mkdir()
    plugins = {"storage": botcriptofy_storage, "sample": SamplePlugin()}
    monkeypatch.setattr(_cli.CliContext, "runtime",
                        lambda self, watch=False: Runtime(self.settings_dir, env=self.env, plugins=plugins, discover=False, watch=False))
    botcriptofy_storage.register_commands(cli=_cli.cli)
    runner = CliRunner()

    def run(url: str, *args: str, **storage: object):
        (settings_dir / "settings.toml").write_text(render_settings({"storage": {"url": url, **storage}}, state_dir=tmp_path / "state"))
        return runner.invoke(_cli.cli, ["--settings", str(settings_dir), *args], catch_exceptions=False)

    return run


def test_db_current_and_upgrade_commands(cli, tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"
    result = cli(url, "db", "current")
    assert result.exit_code == 1, result.output
    assert "storage" in result.output and "(empty)" in result.output and "behind head storage_0003" in result.output
    assert "pending migrations" in result.output

    result = cli(url, "db", "upgrade")
    assert result.exit_code == 0, result.output
    assert "storage              (empty) -> storage_0003" in result.output
    assert "sample               (empty) -> sample_0002" in result.output

    result = cli(url, "db", "current")
    assert result.exit_code == 0, result.output
    assert "sample_0002" in result.output and "up to date" in result.output
    assert "behind" not in result.output

    result = cli(url, "db", "outbox")
    assert result.exit_code == 0 and "pending=0 delivered=0 failed=0" in result.output


def test_db_commands_on_postgres(cli, postgres_url):
    result = cli(postgres_url, "db", "upgrade")
    assert result.exit_code == 0, result.output
    result = cli(postgres_url, "db", "current")
    assert result.exit_code == 0 and result.output.count("up to date") == 2


def test_db_revision_writes_a_script_with_autogenerate(cli, tmp_path, monkeypatch):
    copy = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS, copy)
    for script in (copy / "versions").glob("0002_*.py"):
        script.unlink()
    monkeypatch.setattr(SamplePlugin, "register_migrations",
                        hookimpl(lambda self, kernel: Migrations(directory=copy, metadata=Base.metadata)))
    url = f"sqlite+aiosqlite:///{tmp_path / 'rev.db'}"
    assert cli(url, "db", "upgrade").exit_code == 0
    result = cli(url, "db", "revision", "sample", "-m", "add readings", "--autogenerate", "--rev-id", "sample_0002b")
    assert result.exit_code == 0, result.output
    written = list((copy / "versions").glob("sample_0002b_*.py"))
    assert len(written) == 1 and "wrote" in result.output
    script = written[0].read_text()
    assert "op.create_table('sample_readings'" in script and "down_revision: str | Sequence[str] | None = 'sample_0001'" in script
    assert "botcriptofy_outbox" not in script  # other plugins' tables are not this plugin's business
    assert cli(url, "db", "upgrade").exit_code == 0


def test_db_revision_for_an_unknown_plugin(cli, tmp_path):
    result = cli(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}", "db", "revision", "nope", "-m", "x")
    assert result.exit_code == 1 and "plugin 'nope' is not enabled" in result.output


async def test_the_sample_notes_model_matches_its_migration(storage_kernel):
    harness = await storage_kernel()
    async with harness.kernel.database().session(tenant_id="t") as session:
        session.add(Note(body="fits"))
        await session.flush()
        assert (await session.scalars(select(Note.body))).all() == ["fits"]


async def test_workers_starting_together_upgrade_one_after_the_other(database_url, tmp_path):
    """Three processes' worth of runtimes start at once on one empty database."""
    runtimes = []
    for n in range(3):
        directory = tmp_path / f"worker-{n}"
        directory.mkdir()
        (directory / "settings.toml").write_text(render_settings({"storage": {"url": database_url, "relay_enabled": False}},
                                                                 state_dir=tmp_path / f"state-{n}"))
        runtimes.append(Runtime(directory, env="testing", plugins={"storage": botcriptofy_storage, "sample": SamplePlugin()},
                                discover=False, watch=False))
    try:
        kernels = await asyncio.gather(*(runtime.start() for runtime in runtimes))
        assert all(runtime.plugins["storage"].error is None for runtime in runtimes)
        db = kernels[0].database()
        assert await _version(db, "storage") == ["storage_0003"]
        assert await _version(db, "sample") == ["sample_0002"]
        async with db.session(tenant_id="t") as session:
            session.add(Note(body="after a crowded start"))
    finally:
        await asyncio.gather(*(runtime.stop() for runtime in runtimes))


def test_db_revision_needs_the_script_template(cli, tmp_path, monkeypatch):
    copy = tmp_path / "bare"
    shutil.copytree(MIGRATIONS, copy)
    (copy / "script.py.mako").unlink()
    monkeypatch.setattr(SamplePlugin, "register_migrations", hookimpl(lambda self, kernel: Migrations(directory=copy)))
    result = cli(f"sqlite+aiosqlite:///{tmp_path / 'y.db'}", "db", "revision", "sample", "-m", "x")
    assert result.exit_code == 1 and "script.py.mako is missing" in result.output


def test_db_outbox_requeues_failed_deliveries(cli, tmp_path):
    database = tmp_path / "outbox.db"
    url = f"sqlite+aiosqlite:///{database}"
    assert cli(url, "db", "upgrade").exit_code == 0
    with sqlite3.connect(database) as connection:
        connection.execute("INSERT INTO botcriptofy_outbox (id, type, payload, idempotency_key, occurred_at, created_at, dispatched_at) "
                           "VALUES ('e1', 'sample.note_written', '{}', 'e1', '2025-01-01', '2025-01-01', '2025-01-01')")
        connection.execute("INSERT INTO botcriptofy_outbox_delivery (event_id, handler, status, attempts, next_attempt_at, last_error) "
                           "VALUES ('e1', 'sample.audit', 'failed', 20, '2025-01-01', 'RuntimeError: down')")
    result = cli(url, "db", "outbox")
    assert "pending=0 delivered=0 failed=1" in result.output
    result = cli(url, "db", "outbox", "--retry-failed")
    assert result.exit_code == 0, result.output
    assert "queued 1 failed deliveries again" in result.output and "pending=1 delivered=0 failed=0" in result.output


def test_script_heads_are_read_once_per_state_of_the_revision_files(tmp_path, monkeypatch):
    """Alembic compiles every revision script to find the heads: the readiness check must not pay that on every call."""
    import sqlalchemy as sa
    from alembic.script import ScriptDirectory

    from botcriptofy_storage import _migrate

    copy = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS, copy)
    (copy / "versions" / "0002_readings.py").unlink()
    reads = []
    original = ScriptDirectory.from_config.__func__
    monkeypatch.setattr(ScriptDirectory, "from_config", classmethod(lambda cls, config: reads.append(1) or original(cls, config)))
    plan = _migrate.PluginMigrations("sample", copy)
    with sa.create_engine(f"sqlite:///{tmp_path / 'heads.db'}").connect() as connection:
        assert _migrate.script_heads(plan, connection) == ("sample_0001",)
        assert _migrate.script_heads(plan, connection) == ("sample_0001",)
        assert len(reads) == 1  # the second call read nothing
        shutil.copy(MIGRATIONS / "versions" / "0002_readings.py", copy / "versions")  # a new revision: read again
        assert _migrate.script_heads(plan, connection) == ("sample_0002",)
        assert len(reads) == 2
