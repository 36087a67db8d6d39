"""The plugin in a kernel: scheduled through the workflows plugin, metrics, failure and staleness notifications, routes, CLI, drill."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from botcriptofy._cli import cli
from botcriptofy.testing import render_settings, wait_until
from botcriptofy_backup import BackupPlugin
from botcriptofy_backup._keys import Keyring
from botcriptofy_backup._sqlite import table_counts
from botcriptofy_backup._state import SERVICE
from botcriptofy_workflows import WorkflowsPlugin

from .conftest import Identity, Inbox, key_entry, other_plugins, write_rows

ADMIN = {"x-probe-actor": "configuration:backups,configuration:backups_restore"}
LAST = "botcriptofy_backup_last_success_timestamp_seconds"


async def harness_for(kernel_harness: Any, tmp_path: Path, inbox: Inbox, plugin: BackupPlugin | None = None, **backup: Any) -> Any:
    settings = {"sqlite_path": str(tmp_path / "live.db"), "directory": str(tmp_path / "backups"), "sqlite_name": "main", **backup}
    return await kernel_harness(
        plugins={"backup": plugin or BackupPlugin(), "identity": Identity(), "inbox": inbox}, settings={"backup": settings}
    )


def sample(harness: Any, name: str, database: str = "main") -> float | None:
    return harness.kernel.metrics.get_sample_value(name, {"database": database})


@pytest.mark.slow
async def test_the_schedule_defaults_to_every_15_minutes_and_runs_through_the_workflows_plugin(kernel_harness, tmp_path, backup_keys):
    write_rows(tmp_path / "live.db", 100)
    plugin = BackupPlugin()
    default = await harness_for(kernel_harness, tmp_path, Inbox(), plugin)
    [schedule] = plugin.register_schedules(kernel=default.kernel)
    assert schedule.id == "run" and schedule.interval == 900 and schedule.overlap == "skip"
    await default.close()

    inbox = Inbox()
    harness = await kernel_harness(
        plugins={"workflows": WorkflowsPlugin(), "backup": BackupPlugin(), "inbox": inbox, "identity": Identity()},
        settings={
            "workflows": {"retry_initial_interval": 0.01, "retry_maximum_interval": 0.05, "watch_interval": 0.05, "graceful_shutdown": 2},
            "backup": {
                "sqlite_path": str(tmp_path / "live.db"),
                "directory": str(tmp_path / "scheduled"),
                "interval": 1,
                "sqlite_name": "main",
            },
        },
    )
    await wait_until(lambda: len(list((tmp_path / "scheduled").glob("*.bcfbak"))) >= 1, timeout=60, interval=0.2)
    # The file appears when it is written; the run records its success just after (seen once as None under load).
    await wait_until(lambda: sample(harness, LAST) is not None, timeout=10, interval=0.05)
    assert abs(sample(harness, LAST) - time.time()) < 30
    listed = (await harness.client.get("/v1/admin/schedules", headers={"x-probe-actor": "configuration:manage"})).json()
    assert any(item["id"] == "backup.run" for item in listed)
    assert not [n for n in inbox.received if n.category == "backup.failed"]


async def test_a_failed_backup_is_counted_and_notified_and_a_stale_one_is_notified(kernel_harness, tmp_path, backup_keys):
    inbox = Inbox()
    harness = await harness_for(kernel_harness, tmp_path, inbox, stale_after=60)  # live.db does not exist yet
    service = harness.kernel.stash[SERVICE]
    report = await service.tick()
    [failed] = report["results"]
    assert not failed["ok"] and "does not exist" in failed["error"] and report["stale"] == ["main"]
    assert sample(harness, "botcriptofy_backup_failures_total") == 1 and sample(harness, LAST) is None
    categories = {n.category: n for n in inbox.received}
    assert categories["backup.failed"].recipient == "department:configuration" and categories["backup.failed"].severity == "error"
    assert "never" in categories["backup.stale"].body

    write_rows(tmp_path / "live.db", 10)
    inbox.received.clear()
    report = await service.tick()
    assert report["results"][0]["ok"] and report["stale"] == [] and inbox.received == []
    assert abs(sample(harness, LAST) - time.time()) < 10
    service.last_success["main"] = time.time() - 120  # two minutes without a backup, past stale_after
    assert await service.stale() == ["main"] and inbox.received[-1].category == "backup.stale"


async def test_the_admin_routes_need_the_configuration_permission_and_name_bad_fields(kernel_harness, tmp_path, backup_keys):
    write_rows(tmp_path / "live.db", 300)
    harness = await harness_for(kernel_harness, tmp_path, Inbox(), keep_last=2, restore_directory=str(tmp_path / "restores"))
    client = harness.client
    assert (await client.get("/v1/admin/backups")).status_code == 401
    assert (await client.get("/v1/admin/backups", headers={"x-probe-actor": "billing:read"})).status_code == 403
    for _ in range(3):
        made = await client.post("/v1/admin/backups", json={}, headers=ADMIN)
        assert made.status_code == 200 and made.json()["ok"], made.text
    listed = (await client.get("/v1/admin/backups", headers=ADMIN)).json()
    assert len(listed["backups"]) == 2 and listed["databases"] == [
        {"database": "main", "engine": "sqlite", "last_success": listed["databases"][0]["last_success"], "stale": False}
    ]
    newest = listed["backups"][0]["id"]
    verified = (await client.post("/v1/admin/backups/verify", json={"backup": newest}, headers=ADMIN)).json()
    assert verified["valid"] and verified["databases"][0]["backups"][0]["integrity"] == "ok"

    unknown = await client.get("/v1/admin/backups", params={"database": "nope"}, headers=ADMIN)
    assert unknown.status_code == 404 and unknown.json()["errors"][0]["field"] == "database"
    for escape in ("../x.db", "/etc/x.db", "a/b.db"):  # only a new name under backup.restore_directory
        refused = await client.post("/v1/admin/backups/restore", json={"database": "main", "target": escape}, headers=ADMIN)
        assert refused.status_code == 422 and "target" in json.dumps(refused.json()["errors"])
    only_read = {"x-probe-actor": "configuration:backups"}
    target = "restored.db"
    assert (
        await client.post("/v1/admin/backups/restore", json={"database": "main", "target": target}, headers=only_read)
    ).status_code == 403
    restored = await client.post("/v1/admin/backups/restore", json={"database": "main", "target": target}, headers=ADMIN)
    assert restored.status_code == 200, restored.text
    assert restored.json()["target"] == str(tmp_path / "restores" / "restored.db")
    assert table_counts(tmp_path / "restores" / "restored.db") == {"trades": 300}
    again = await client.post("/v1/admin/backups/restore", json={"database": "main", "target": target}, headers=ADMIN)
    assert again.status_code == 409 and again.json()["errors"][0]["field"] == "target"
    missing = await client.post("/v1/admin/backups/verify", json={"backup": "main-0.bcfbak"}, headers=ADMIN)
    assert missing.status_code == 404 and missing.json()["errors"][0]["field"] == "backup"

    drill = (await client.post("/v1/admin/backups/drill", json={}, headers=ADMIN)).json()
    [main] = drill["databases"]
    assert drill["ok"] and main["tables"] == {"trades": {"source": 300, "restored": 300, "match": True}} and main["rto_seconds"] > 0


def run_cli(settings_dir: Path, *args: str) -> Any:
    import botcriptofy_backup

    botcriptofy_backup.plugin.register_commands(cli=cli)
    return CliRunner().invoke(cli, ["--settings", str(settings_dir), "--env", "testing", "backup", *args])


def cli_settings(tmp_path: Path, **backup: Any) -> Path:
    settings_dir = tmp_path / "settings"
    settings_dir.mkdir(exist_ok=True)
    (settings_dir / "settings.toml").write_text(
        render_settings(
            {
                "plugins": {"disabled": other_plugins("backup", "storage")},
                "storage": {"url": f"sqlite+aiosqlite:///{tmp_path / 'live.db'}"},
                "backup": {"directory": str(tmp_path / "backups"), **backup},
            },
            state_dir=tmp_path / "state",
        )
    )
    return settings_dir


def test_the_command_line_backs_up_lists_verifies_restores_and_drills_the_storage_sqlite_database(tmp_path, backup_keys, monkeypatch):
    write_rows(tmp_path / "live.db", 250)
    write_rows(tmp_path / "live.db", 40, table="orders")
    settings_dir = cli_settings(tmp_path)
    made = run_cli(settings_dir, "now")
    assert made.exit_code == 0, made.output
    assert "sqlite: full backup sqlite-" in made.output
    listed = json.loads(run_cli(settings_dir, "list", "--json").output)
    [entry] = listed["backups"]
    assert entry["key_id"] == "k1" and entry["database"] == "sqlite"
    assert run_cli(settings_dir, "verify").exit_code == 0
    restored = run_cli(settings_dir, "restore", "--database", "sqlite", "--target", str(tmp_path / "copy.db"))
    assert restored.exit_code == 0, restored.output
    assert table_counts(tmp_path / "copy.db")["trades"] == 250
    naive = run_cli(settings_dir, "restore", "--database", "sqlite", "--target", str(tmp_path / "t.db"), "--time", "2026-01-01T00:00:00")
    assert naive.exit_code == 2 and "time zone" in naive.output
    timed = run_cli(settings_dir, "restore", "--database", "sqlite", "--target", str(tmp_path / "t.db"), "--time", "2026-01-01T00:00:00Z")
    assert timed.exit_code == 1 and "point-in-time restores are for PostgreSQL" in timed.output
    entry_line = run_cli(settings_dir, "new-key", "k9").output.strip()
    assert Keyring.parse(entry_line).current[0] == "k9"
    drill = run_cli(settings_dir, "drill", "--json")
    assert drill.exit_code == 0, drill.output
    report = json.loads(drill.output)
    tables = report["databases"][0]["tables"]
    assert tables["orders"] == {"source": 40, "restored": 40, "match": True}
    assert tables["trades"] == {"source": 250, "restored": 250, "match": True}
    assert "botcriptofy_outbox" in tables and all(table["match"] for table in tables.values())  # the storage plugin's own tables too

    path = tmp_path / "backups" / entry["id"]
    raw = bytearray(path.read_bytes())
    raw[-40] ^= 0xFF
    path.write_bytes(bytes(raw))
    tampered = run_cli(settings_dir, "verify")
    assert tampered.exit_code == 1 and str(path) in tampered.output and "altered" in tampered.output

    monkeypatch.setenv("BCF_BACKUP_KEYS", key_entry("k1", 7))
    wrong = run_cli(settings_dir, "restore", "--database", "sqlite", "--target", str(tmp_path / "other.db"), "--backup", entry["id"])
    assert wrong.exit_code == 1 and "wrong key" in wrong.output and entry["id"] in wrong.output
    assert not (tmp_path / "other.db").exists()

    monkeypatch.delenv("BCF_BACKUP_KEYS")
    production = run_cli(settings_dir, "now")
    assert production.exit_code == 0  # outside production a development key under the state directory
    assert (tmp_path / "state" / "backup" / "development.key").stat().st_mode & 0o777 == 0o600


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.timeout(180)
def test_the_restore_drill_on_postgresql_restores_the_latest_backup_and_matches_row_counts(tmp_path, backup_keys, pg_cluster):
    pg_cluster.psql("CREATE TABLE accounts (id int PRIMARY KEY)")
    pg_cluster.psql("INSERT INTO accounts SELECT generate_series(1, 500)")
    pg_cluster.psql("CREATE TABLE fills (id int)")
    pg_cluster.psql("INSERT INTO fills SELECT generate_series(1, 70)")
    settings_dir = cli_settings(
        tmp_path,
        sqlite_path="-",
        pg_stanza=pg_cluster.stanza,
        pg_data=str(pg_cluster.data),
        pg_port=pg_cluster.port,
        pg_socket_path=pg_cluster.socket,
        pg_run_as="postgres",
        pg_repo_path=str(pg_cluster.root / "repo"),
        pg_config_path=str(pg_cluster.root / "pgbackrest" / "pgbackrest.conf"),
        drill_directory=str(pg_cluster.root / "drill"),
        pg_archive_timeout=30,
    )
    setup = run_cli(settings_dir, "pg-setup")
    assert setup.exit_code == 0, setup.output
    assert f"archive_command = 'pgbackrest --config={pg_cluster.root / 'pgbackrest' / 'pgbackrest.conf'}" in setup.output
    assert "stanza created, check passed" in setup.output
    made = run_cli(settings_dir, "now")
    assert made.exit_code == 0, made.output
    assert f"{pg_cluster.stanza}: full backup" in made.output
    pg_cluster.psql("INSERT INTO fills SELECT generate_series(71, 90)")  # after the backup: reached through archived WAL
    drill = run_cli(settings_dir, "drill", "--json")
    assert drill.exit_code == 0, drill.output
    [report] = json.loads(drill.output)["databases"]
    assert report["tables"] == {
        "public.accounts": {"source": 500, "restored": 500, "match": True},
        "public.fills": {"source": 90, "restored": 90, "match": True},
    }
    assert report["rto_seconds"] > 0 and report["engine"] == "postgresql"
    second = run_cli(settings_dir, "now")
    assert f"{pg_cluster.stanza}: incr backup" in second.output, second.output
    listed = json.loads(run_cli(settings_dir, "list", "--json").output)
    assert [item["type"] for item in listed["backups"]] == ["incr", "full"]
    verified = run_cli(settings_dir, "verify")
    assert verified.exit_code == 0 and f"{pg_cluster.stanza}: ok" in verified.output, verified.output


async def test_a_stanza_without_its_data_directory_is_refused_and_an_unknown_cluster_user_is_a_notified_failure(
    kernel_harness, tmp_path, backup_keys
):
    inbox = Inbox()
    harness = await harness_for(
        kernel_harness, tmp_path, inbox, sqlite_path="-", pg_stanza="main", pg_data=str(tmp_path / "pg"), pg_run_as="no-such-user-bcf"
    )
    [result] = await harness.kernel.stash[SERVICE].run()
    assert not result["ok"] and "no operating-system user 'no-such-user-bcf'" in result["error"]
    assert inbox.received[0].category == "backup.failed" and sample(harness, "botcriptofy_backup_failures_total", "main") == 1
    refused = await harness.apply({"backup": {"pg_stanza": "main"}})
    assert not refused.applied and "pg_data must be the absolute path" in (refused.error or "")
