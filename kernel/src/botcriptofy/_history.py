"""Configuration history: every applied configuration as a numbered version, shared by all workers."""

from __future__ import annotations

import json
import random
import sqlite3
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ._settings import diff

_SCHEMA = """
CREATE TABLE IF NOT EXISTS config_versions (
    version    INTEGER PRIMARY KEY AUTOINCREMENT,
    applied_at TEXT NOT NULL,
    source     TEXT NOT NULL,
    digest     TEXT NOT NULL,
    files      TEXT NOT NULL,
    settings   TEXT NOT NULL,
    diff       TEXT NOT NULL,
    note       TEXT NOT NULL DEFAULT ''
)
"""


@dataclass(frozen=True)
class ConfigVersion:
    """One applied configuration."""

    version: int
    applied_at: str
    source: str
    digest: str
    files: dict[str, str]
    settings: dict[str, Any]
    diff: dict[str, Any]
    note: str

    def summary(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "applied_at": self.applied_at,
            "source": self.source,
            "note": self.note,
            "diff": self.diff,
        }


class ConfigHistory:
    """A small SQLite file in the kernel's state directory; several worker processes may share it."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(self.path, timeout=10, isolation_level=None)
        # Workers starting together race to create the file and switch it to WAL; SQLite answers
        # "database is locked" at once (without its busy handler) to the loser, so retry briefly.
        for attempt in range(100):
            try:
                connection.execute("PRAGMA journal_mode=WAL")
                connection.execute(_SCHEMA)
                return connection
            except sqlite3.OperationalError as error:
                if "locked" not in str(error) or attempt == 99:
                    connection.close()
                    raise
                time.sleep(0.02 + random.random() * 0.05)
        raise AssertionError("unreachable")

    def record(self, *, digest: str, files: Mapping[str, str], settings: Mapping[str, Any], source: str, note: str = "") -> int:
        """Store a version unless the latest one has the same files; return the version number."""
        connection = self._connect()
        try:
            connection.execute("BEGIN IMMEDIATE")
            row = connection.execute("SELECT version, digest, settings FROM config_versions ORDER BY version DESC LIMIT 1").fetchone()
            if row is not None and row[1] == digest and not note:
                connection.execute("COMMIT")
                return int(row[0])
            previous = json.loads(row[2]) if row is not None else {}
            cursor = connection.execute(
                "INSERT INTO config_versions (applied_at, source, digest, files, settings, diff, note) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    datetime.now(UTC).isoformat(timespec="milliseconds"),
                    source,
                    digest,
                    json.dumps(dict(files), sort_keys=True),
                    json.dumps(dict(settings), sort_keys=True, default=str),
                    json.dumps(diff(previous, settings), default=str),
                    note,
                ),
            )
            connection.execute("COMMIT")
            return int(cursor.lastrowid or 0)
        finally:
            connection.close()

    def versions(self, limit: int = 50) -> list[ConfigVersion]:
        """Return the newest versions first."""
        connection = self._connect()
        try:
            rows = connection.execute("SELECT * FROM config_versions ORDER BY version DESC LIMIT ?", (limit,)).fetchall()
        finally:
            connection.close()
        return [self._version(row) for row in rows]

    def get(self, version: int) -> ConfigVersion | None:
        connection = self._connect()
        try:
            row = connection.execute("SELECT * FROM config_versions WHERE version = ?", (version,)).fetchone()
        finally:
            connection.close()
        return self._version(row) if row is not None else None

    def latest(self) -> ConfigVersion | None:
        found = self.versions(limit=1)
        return found[0] if found else None

    @staticmethod
    def _version(row: tuple[Any, ...]) -> ConfigVersion:
        return ConfigVersion(
            version=row[0],
            applied_at=row[1],
            source=row[2],
            digest=row[3],
            files=json.loads(row[4]),
            settings=json.loads(row[5]),
            diff=json.loads(row[6]),
            note=row[7],
        )
