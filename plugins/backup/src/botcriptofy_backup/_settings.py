"""The ``[default.backup]`` settings section. Keys live in the environment, never here."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from botcriptofy import PluginSettings, SettingsSchema


class BackupSettings(PluginSettings):
    """Settings of the backup plugin; see the plugin README for each key."""

    interval: float = Field(900.0, ge=1, description="Seconds between scheduled backups (the workflows plugin runs them).")
    schedule_timeout: float = Field(
        3 * 3600.0, ge=10, description="Seconds one scheduled run may take (a full PostgreSQL backup of a large database is slow)."
    )
    stale_after: float = Field(
        2700.0, gt=0, description="A database whose last successful backup is older than this is stale: notified and alerted (live)."
    )
    sqlite_path: str = Field(
        "",
        description="SQLite file to back up. Empty: the storage plugin's database when it is SQLite; '-' turns SQLite backups off.",
    )
    sqlite_name: str = Field(
        "sqlite", pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="Name of the SQLite database in listings and metrics."
    )
    directory: str = Field("", description="Directory of SQLite backups. Empty: <kernel.state_dir>/backup/sqlite.")
    keep_last: int = Field(
        96, ge=1, le=100_000, description="SQLite backups kept per database; older ones are deleted after each backup (live)."
    )
    compression_level: int = Field(3, ge=0, le=9, description="zlib level of SQLite backups (live).")
    pg_stanza: str = Field(
        "",
        pattern=r"^([A-Za-z0-9_-]{1,64})?$",
        description="pgBackRest stanza, the PostgreSQL database's name here. Empty: PostgreSQL backups off.",
    )
    pg_data: str = Field("", description="Data directory of the PostgreSQL cluster (pgBackRest runs on its host).")
    pg_port: int = Field(5432, ge=1, le=65535, description="Port of the cluster.")
    pg_socket_path: str = Field("/var/run/postgresql", description="Unix socket directory of the cluster.")
    pg_user: str = Field("postgres", description="Database superuser pgBackRest connects as (through the socket).")
    pg_database: str = Field("postgres", description="Database whose tables the restore drill counts.")
    pg_run_as: str = Field(
        "", description="Operating-system user that owns the cluster; pgBackRest runs as it when the service runs as root."
    )
    pg_repo_path: str = Field("", description="pgBackRest repository. Empty: <kernel.state_dir>/backup/pgbackrest/repo.")
    pg_config_path: str = Field(
        "", description="Where the plugin writes pgbackrest.conf (mode 0600). Empty: <kernel.state_dir>/backup/pgbackrest/pgbackrest.conf."
    )
    pg_retention_full: int = Field(2, ge=1, le=9999, description="Full backups kept (repo1-retention-full); their WAL is kept with them.")
    pg_retention_diff: int = Field(7, ge=1, le=9999, description="Differential backups kept (repo1-retention-diff).")
    pg_full_every: float = Field(
        7 * 86400.0, gt=0, description="Seconds after the last full backup when a scheduled run takes a full one (live)."
    )
    pg_diff_every: float = Field(
        86400.0,
        gt=0,
        description="Seconds after the last full or differential when a scheduled run takes a differential; otherwise incremental (live).",
    )
    pg_compress_type: Literal["lz4", "zst", "gz", "bz2", "none"] = Field("lz4", description="pgBackRest compress-type.")
    pg_process_max: int = Field(2, ge=1, le=64, description="pgBackRest process-max.")
    pg_archive_timeout: float = Field(60.0, ge=1, le=86400, description="Seconds pgBackRest waits for a WAL segment to be archived.")
    pg_bin: str = Field(
        "/usr/lib/postgresql/15/bin", description="PostgreSQL binaries (pg_ctl, psql) the restore drill starts the restored cluster with."
    )
    restore_directory: str = Field(
        "", description="Directory that restores asked for over HTTP are written into. Empty: <kernel.state_dir>/backup/restores."
    )
    drill_directory: str = Field("", description="Scratch directory of restore drills. Empty: <kernel.state_dir>/backup/drill.")

    @model_validator(mode="after")
    def _postgres_needs_its_data_directory(self) -> BackupSettings:
        if self.pg_stanza and not self.pg_data.startswith("/"):
            raise ValueError("pg_data must be the absolute path of the cluster's data directory when pg_stanza is set")
        return self


LIVE_KEYS = frozenset({"stale_after", "keep_last", "compression_level", "pg_full_every", "pg_diff_every"})
SCHEMA = SettingsSchema(model=BackupSettings, live=LIVE_KEYS)
