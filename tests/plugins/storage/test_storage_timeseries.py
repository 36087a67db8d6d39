"""Time series tables: TimescaleDB hypertables when the extension exists, else an index on (tenant_id, time)."""

from __future__ import annotations

import pytest
from sqlalchemy import text

import botcriptofy_storage
from botcriptofy_storage import _timeseries


async def _create(db, name: str, *, tenant: bool = True) -> None:
    tenant_column = "tenant_id VARCHAR(64) NOT NULL, " if tenant else ""
    async with db.engine.begin() as connection:
        await connection.execute(text(f"CREATE TABLE {name} (id INTEGER NOT NULL, {tenant_column}"
                                      "time TIMESTAMP WITH TIME ZONE NOT NULL, price FLOAT, PRIMARY KEY (id, time))"))


async def _indexes(db, table: str) -> dict[str, str]:
    async with db.engine.connect() as connection:
        if db.dialect == "sqlite":
            query = "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = :t"
            rows = await connection.execute(text(query), {"t": table})
        else:
            rows = await connection.execute(text("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = :t"), {"t": table})
        return {name: sql for name, sql in rows if sql}


async def test_without_timescaledb_a_time_series_is_an_indexed_table(database_url, kernel_harness):
    harness = await kernel_harness(plugins={"storage": botcriptofy_storage}, settings={"storage": {"url": database_url}})
    db = harness.kernel.database()
    await _create(db, "prices")
    await _create(db, "ticks", tenant=False)
    assert await db.ensure_time_series("prices", "time") == "index"
    assert await db.ensure_time_series("prices", "time") == "index"  # idempotent
    assert await db.ensure_time_series("ticks", "time") == "index"
    prices = await _indexes(db, "prices")
    assert [name for name in prices if name.startswith("ix_")] == ["ix_prices_tenant_id_time_ts"]
    definition = prices["ix_prices_tenant_id_time_ts"].replace('"', "")
    assert "(tenant_id, time DESC)" in definition
    assert "(time DESC)" in (await _indexes(db, "ticks"))["ix_ticks_time_ts"].replace('"', "")
    with pytest.raises(ValueError, match="has no column 'when'"):
        await db.ensure_time_series("prices", "when")


async def test_a_migration_can_make_its_table_a_time_series(storage_kernel):
    harness = await storage_kernel()
    indexes = await _indexes(harness.kernel.database(), "sample_readings")
    assert "ix_sample_readings_tenant_id_time_ts" in indexes


async def test_postgres_without_the_extension_has_no_hypertable(postgres_url, kernel_harness):
    harness = await kernel_harness(plugins={"storage": botcriptofy_storage}, settings={"storage": {"url": postgres_url}})
    db = harness.kernel.database()
    async with db.engine.connect() as connection:
        assert not await connection.run_sync(_timeseries.has_timescaledb)
        assert (await connection.execute(text("SELECT count(*) FROM pg_available_extensions WHERE name = 'timescaledb'"))).scalar() == 0


async def test_with_timescaledb_the_table_becomes_a_hypertable(postgres_url, kernel_harness, monkeypatch):
    """The server has no TimescaleDB: a stand-in create_hypertable with the extension's signature records the call."""
    harness = await kernel_harness(plugins={"storage": botcriptofy_storage}, settings={"storage": {"url": postgres_url}})
    db = harness.kernel.database()
    await _create(db, "candles")
    async with db.engine.begin() as connection:
        await connection.execute(text("CREATE TABLE hypertable_calls (relation text, time_column text, if_not_exists boolean, "
                                      "migrate_data boolean, chunk interval)"))
        await connection.execute(text(
            "CREATE FUNCTION create_hypertable(relation regclass, time_column_name name, partitioning_column name DEFAULT NULL, "
            "number_partitions integer DEFAULT NULL, associated_schema_name name DEFAULT NULL, associated_table_prefix name DEFAULT NULL, "
            "chunk_time_interval anyelement DEFAULT NULL::bigint, create_default_indexes boolean DEFAULT TRUE, "
            "if_not_exists boolean DEFAULT FALSE, partitioning_func regproc DEFAULT NULL, migrate_data boolean DEFAULT FALSE) "
            "RETURNS TABLE(hypertable_id integer, schema_name name, table_name name, created boolean) LANGUAGE sql AS $$ "
            "INSERT INTO hypertable_calls VALUES (relation::text, time_column_name, if_not_exists, migrate_data, "
            "CASE WHEN chunk_time_interval IS NULL THEN NULL ELSE chunk_time_interval::text::interval END); "
            "SELECT 1, 'public'::name, relation::text::name, true $$"
        ))
    monkeypatch.setattr(_timeseries, "has_timescaledb", lambda connection: True)
    assert await db.ensure_time_series("candles", "time", chunk_interval="1 day") == "hypertable"
    async with db.engine.connect() as connection:
        query = "SELECT relation, time_column, if_not_exists, migrate_data, chunk FROM hypertable_calls"
        calls = (await connection.execute(text(query))).all()
    assert [(r[0], r[1], r[2], r[3], str(r[4])) for r in calls] == [("candles", "time", True, True, "1 day, 0:00:00")]
    assert "ix_candles_tenant_id_time_ts" in await _indexes(db, "candles")
