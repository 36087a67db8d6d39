"""SQLite's one writer inside one process: writers queue at the engine's gate, and background batches hold the lock briefly."""

from __future__ import annotations

import asyncio
import sqlite3
import threading

import pytest
import sqlalchemy as sa

import botcriptofy_storage
from botcriptofy_storage._driver import SqliteConnection

from .storage_sample import SamplePlugin

ROWS = sa.Table("writer_rows", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True), sa.Column("note", sa.String(20)))


@pytest.fixture
async def sqlite_kernel(kernel_harness, tmp_path):
    path = tmp_path / "writers.db"
    harness = await kernel_harness(
        plugins={"storage": botcriptofy_storage, "sample": SamplePlugin()},
        settings={"storage": {"url": f"sqlite+aiosqlite:///{path}", "sqlite_busy_timeout": 2.0}},
    )
    database = harness.kernel.database()
    async with database.engine.begin() as connection:
        await connection.run_sync(ROWS.metadata.create_all)
    return harness, database, path


async def _driver_of(session) -> SqliteConnection:
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    return raw.driver_connection


async def test_a_second_writer_of_the_process_queues_at_the_gate_instead_of_in_sqlites_busy_handler(sqlite_kernel):
    _harness, database, _path = sqlite_kernel
    first_wrote = asyncio.Event()
    release = asyncio.Event()

    async def first() -> None:
        async with database.session(system=True) as session:
            await session.execute(sa.insert(ROWS).values(note="first"))
            driver = await _driver_of(session)
            assert driver.gate is not None and driver.gate.holder is driver  # taken at the first write, held to the end
            first_wrote.set()
            await release.wait()
        assert driver.gate.holder is not driver  # given back at the commit

    async def second() -> None:
        await first_wrote.wait()
        async with database.session(system=True) as session:
            await session.execute(sa.insert(ROWS).values(note="second"))

    holder = asyncio.create_task(first())
    waiter = asyncio.create_task(second())
    await first_wrote.wait()
    await asyncio.sleep(0.2)
    assert not waiter.done()  # queued behind the first writer, not failed and not spinning in the busy handler
    gate = (await _gate(database))
    assert gate._lock.locked() and len(gate._lock._waiters or ()) == 1
    release.set()
    await asyncio.wait_for(asyncio.gather(holder, waiter), 5)
    async with database.session(system=True) as session:
        assert sorted((await session.execute(sa.select(ROWS.c.note))).scalars()) == ["first", "second"]


async def _gate(database):
    async with database.session(system=True) as session:
        return (await _driver_of(session)).gate


async def test_reads_do_not_take_the_gate_and_a_writer_waiting_past_the_busy_timeout_gets_database_is_locked(sqlite_kernel):
    _harness, database, _path = sqlite_kernel
    async with database.session(system=True) as session:
        await session.execute(sa.select(ROWS))
        driver = await _driver_of(session)
        assert driver.gate.holder is None  # a read takes no write lock, so no turn at the gate
        await session.execute(sa.insert(ROWS).values(note="held"))
        assert driver.gate.holder is driver
        driver.gate.timeout = 0.1
        try:
            # A second transaction of the same task cannot write while the first holds the lock: SQLite's own answer.
            with pytest.raises(Exception, match="database is locked"):
                async with database.session(system=True) as nested:
                    await nested.execute(sa.insert(ROWS).values(note="nested"))
        finally:
            driver.gate.timeout = 2.0


async def test_a_write_batch_runs_on_the_loop_and_waits_on_a_thread_when_another_process_holds_the_lock(sqlite_kernel):
    _harness, database, path = sqlite_kernel
    ran_on: list[str] = []

    def work(connection):
        ran_on.append(threading.current_thread().name)
        connection.execute(sa.insert(ROWS).values(note=f"batch {len(ran_on)}"))
        return connection.execute(sa.select(sa.func.count()).select_from(ROWS)).scalar_one()

    assert await database.write_batch(work) == 1
    assert ran_on == [threading.main_thread().name]  # no thread hop: the statements ran back to back on the loop

    # Another process's writer (a connection outside this engine and its gate) holds the write lock for a while.
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO writer_rows (note) VALUES ('other process')")
    released = threading.Timer(0.3, lambda: other.execute("COMMIT"))
    released.start()
    try:
        assert await database.write_batch(work) == 3  # waited for the other writer, not failed
    finally:
        released.join()
        other.close()
    # Its BEGIN IMMEDIATE found the lock taken at once (busy timeout 0 on the loop), so the batch ran on a thread.
    assert len(ran_on) == 2 and ran_on[1] != threading.main_thread().name



async def test_a_connection_closed_inside_its_transaction_gives_the_gate_back_without_an_error(sqlite_kernel):
    """The pool terminating a connection that is still in a write transaction (shutdown, a cancelled request):
    the close succeeds, the gate is free, and the next writer proceeds at once."""
    _harness, database, _path = sqlite_kernel
    async with database.engine.connect() as connection:
        await connection.execute(sa.insert(ROWS).values(note="never committed"))
        driver = (await connection.get_raw_connection()).driver_connection
        gate = driver.gate
        assert gate is not None and gate.holder is driver and driver.in_transaction
        await driver.close()  # what terminating it does; it raised sqlite3.ProgrammingError ("closed database")
        assert gate.holder is None
        await connection.invalidate()
    async with asyncio.timeout(1):  # well under the 2 s busy timeout
        async with database.session(system=True) as session:
            await session.execute(sa.insert(ROWS).values(note="next"))
    async with database.session(system=True) as session:
        assert list((await session.execute(sa.select(ROWS.c.note))).scalars()) == ["next"]
