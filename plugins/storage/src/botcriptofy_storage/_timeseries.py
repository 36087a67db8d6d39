"""Time series tables: a TimescaleDB hypertable when the extension exists, else a plain table with a time index."""

from __future__ import annotations

import hashlib
import logging
from datetime import timedelta

from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

log = logging.getLogger("botcriptofy.storage")


def has_timescaledb(connection: Connection) -> bool:
    """Whether the TimescaleDB extension is installed in the connected database."""
    if connection.dialect.name != "postgresql":
        return False
    return connection.execute(text("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'")).first() is not None


def index_name(table: str, columns: list[str]) -> str:
    name = f"ix_{table}_{'_'.join(columns)}_ts"
    if len(name) > 63:
        digest = hashlib.sha1(name.encode(), usedforsecurity=False).hexdigest()[:8]
        name = f"{name[:50]}_{digest}_ts"
    return name


def ensure_time_series(
    connection: Connection,
    table: str,
    time_column: str,
    *,
    tenant_column: str | None = "tenant_id",
    chunk_interval: str | timedelta | None = None,
) -> str:
    """Make ``table`` a time series on ``connection`` (inside the caller's transaction); return ``"hypertable"`` or ``"index"``.

    Idempotent, so it is safe in a migration and at every start-up. A hypertable needs ``time_column``
    in every unique index and in the primary key: declare the key as ``(id, time_column)``.
    """
    columns = {column["name"] for column in inspect(connection).get_columns(table)}
    if time_column not in columns:
        raise ValueError(f"table '{table}' has no column '{time_column}' to use as the time column")
    indexed = [tenant_column, time_column] if tenant_column and tenant_column in columns else [time_column]
    quote = connection.dialect.identifier_preparer.quote_identifier
    kind = "index"
    if has_timescaledb(connection):
        statement = "SELECT create_hypertable(CAST(:table AS regclass), CAST(:column AS name), if_not_exists => TRUE, migrate_data => TRUE"
        params: dict[str, object] = {"table": quote(table), "column": time_column}
        if chunk_interval:
            value = ":interval" if isinstance(chunk_interval, timedelta) else "CAST(:interval AS text)"
            statement += f", chunk_time_interval => CAST({value} AS interval)"
            params["interval"] = chunk_interval
        connection.execute(text(statement + ")"), params)
        kind = "hypertable"
    parts = [quote(c) for c in indexed[:-1]] + [f"{quote(indexed[-1])} DESC"]
    connection.execute(text(f"CREATE INDEX IF NOT EXISTS {quote(index_name(table, indexed))} ON {quote(table)} ({', '.join(parts)})"))
    log.info("time series table %s: %s on %s", table, kind, ", ".join(indexed))
    return kind
