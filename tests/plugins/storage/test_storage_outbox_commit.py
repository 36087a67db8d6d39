"""Outbox rows held by the connection and written with the COMMIT: atomic with the transaction, or not at all."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from botcriptofy import Envelope
from botcriptofy_storage._driver import pg_text
from botcriptofy_storage._outbox import events

from .storage_sample import Note, NoteWritten, SamplePlugin


async def _driver(session):
    return (await (await session.connection()).get_raw_connection()).driver_connection


async def _stored(kernel) -> tuple[list[str], list[str]]:
    """(outbox event ids, note bodies) as committed."""
    async with kernel.database().session(system=True) as session:
        ids = list((await session.scalars(select(events.c.id))).all())
        notes = sorted((await session.scalars(select(Note.body))).all())
    return ids, notes


async def test_a_publish_right_before_the_commit_is_held_and_written_with_it(storage_kernel):
    harness = await storage_kernel(sample=SamplePlugin(), relay_enabled=False)
    kernel = harness.kernel
    async with kernel.database().session(tenant_id="acme") as session:
        session.add(Note(body="kept"))
        await session.flush()
        envelope = await kernel.events.publish(NoteWritten(note_id=1, body="with the commit"), session=session)
        driver = await _driver(session)
        assert len(driver.outbox_rows) == 1  # held by the connection, not sent yet
    assert driver.outbox_rows == []
    assert await _stored(kernel) == ([envelope.id], ["kept"])


async def test_a_rollback_after_publish_leaves_no_row_and_the_connection_holds_nothing(storage_kernel):
    harness = await storage_kernel(sample=SamplePlugin(), relay_enabled=False, pool_size=1, max_overflow=0)
    kernel = harness.kernel
    with pytest.raises(RuntimeError, match="declined"):
        async with kernel.database().session(tenant_id="acme") as session:
            session.add(Note(body="lost"))
            await session.flush()
            await kernel.events.publish(NoteWritten(note_id=1, body="never"), session=session)
            driver = await _driver(session)
            raise RuntimeError("declined")
    assert driver.outbox_rows == []
    async with kernel.database().session(tenant_id="acme") as session:  # the same (only) connection, a new transaction
        session.add(Note(body="next"))
    assert await _stored(kernel) == ([], ["next"])


async def test_the_transaction_reads_its_own_outbox_rows_and_a_rolled_back_savepoint_drops_its_own(storage_kernel):
    harness = await storage_kernel(sample=SamplePlugin(), relay_enabled=False)
    kernel = harness.kernel
    async with kernel.database().session(system=True) as session:
        kept = await kernel.events.publish(NoteWritten(note_id=1, body="kept"), session=session)
        assert (await session.execute(select(func.count()).select_from(events))).scalar() == 1  # written before the SELECT
        savepoint = await session.begin_nested()
        await kernel.events.publish(NoteWritten(note_id=2, body="in the savepoint"), session=session)
        await savepoint.rollback()
        savepoint = await session.begin_nested()
        released = await kernel.events.publish(NoteWritten(note_id=3, body="released"), session=session)
        await savepoint.commit()
    assert sorted((await _stored(kernel))[0]) == sorted([kept.id, released.id])


async def test_a_publish_after_a_commit_in_the_same_session_joins_the_next_transaction(storage_kernel):
    """The driver noted at a transaction's begin is not reused once it has committed: the next publish begins its own."""
    harness = await storage_kernel(sample=SamplePlugin(), relay_enabled=False)
    kernel = harness.kernel
    async with kernel.database().session(tenant_id="acme") as session:
        session.add(Note(body="first"))
        await session.commit()
        after = await kernel.events.publish(NoteWritten(note_id=2, body="after the commit"), session=session)
    assert await _stored(kernel) == ([after.id], ["first"])
    with pytest.raises(RuntimeError, match="declined"):
        async with kernel.database().session(tenant_id="acme") as session:
            session.add(Note(body="committed"))
            await session.commit()
            await kernel.events.publish(NoteWritten(note_id=3, body="rolled back"), session=session)
            raise RuntimeError("declined")
    assert await _stored(kernel) == ([after.id], ["committed", "first"])


async def test_a_publish_after_the_transactions_first_statement_needs_no_greenlet_hop(storage_kernel, monkeypatch):
    harness = await storage_kernel(sample=SamplePlugin(), relay_enabled=False)
    kernel = harness.kernel
    async with kernel.database().session(tenant_id="acme") as session:
        session.add(Note(body="kept"))
        await session.flush()

        def refuse(*_args, **_kwargs):
            raise AssertionError("publish hopped into SQLAlchemy's greenlet")

        monkeypatch.setattr(session, "run_sync", refuse)
        envelope = await kernel.events.publish(NoteWritten(note_id=1, body="noted driver"), session=session)
        monkeypatch.undo()
    assert await _stored(kernel) == ([envelope.id], ["kept"])


async def test_a_publish_after_a_statement_in_a_rolled_back_savepoint_is_dropped_with_it(storage_kernel):
    harness = await storage_kernel(sample=SamplePlugin(), relay_enabled=False)
    kernel = harness.kernel
    async with kernel.database().session(tenant_id="acme") as session:
        session.add(Note(body="kept"))
        await session.flush()
        savepoint = await session.begin_nested()
        session.add(Note(body="dropped"))
        await session.flush()
        await kernel.events.publish(NoteWritten(note_id=2, body="in the savepoint"), session=session)
        await savepoint.rollback()
        kept = await kernel.events.publish(NoteWritten(note_id=1, body="after it"), session=session)
    assert await _stored(kernel) == ([kept.id], ["kept"])


_CHILD = """
import asyncio, os, sys
from sqlalchemy import text
from botcriptofy import Envelope
from botcriptofy_storage import StorageSettings
from botcriptofy_storage._database import Database
from botcriptofy_storage._engine import create_engine
from botcriptofy_storage._outbox import Outbox
from sqlalchemy.engine import make_url
sys.path.insert(0, sys.argv[3])
from storage_sample import NoteWritten

async def main(url, stage):
    database = Database(create_engine(make_url(url), StorageSettings()))
    outbox = Outbox(database, wake=lambda: None)
    async with database.session(system=True) as session:
        await session.execute(text("INSERT INTO sample_notes (tenant_id, body) VALUES ('acme', :body)"), {"body": stage})
        await outbox.add([Envelope.wrap(NoteWritten(note_id=1, body=stage))], session=session)
        if stage == "killed":
            os.kill(os.getpid(), 9)  # the process dies with the row held, before COMMIT
    os._exit(0)

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


async def test_a_process_killed_between_publishing_and_committing_stores_neither(storage_kernel, database_url):
    """A worker killed (SIGKILL) after its writes and its publish but before COMMIT: neither is stored; one that commits stores both."""
    harness = await storage_kernel(url=database_url, sample=SamplePlugin(), relay_enabled=False)
    here = str(Path(__file__).parent)
    for stage, code in (("killed", -signal.SIGKILL), ("committed", 0)):
        child = await asyncio.create_subprocess_exec(sys.executable, "-c", _CHILD, database_url, stage, here)
        assert await child.wait() == code
    ids, notes = await _stored(harness.kernel)
    assert notes == ["committed"] and len(ids) == 1
    async with harness.kernel.database().session(system=True) as session:
        payload = (await session.execute(select(events.c.payload))).scalar_one()
    assert payload["body"] == "committed"


HOSTILE = ["$o$", "x$o", "$oo$ $o", "'); DROP TABLE botcriptofy_outbox; --", 'back\\slash \\\' "q"', "ação 日本 🚀", "$$", "$"]


async def test_hostile_values_are_stored_exactly(storage_kernel):
    harness = await storage_kernel(sample=SamplePlugin(), relay_enabled=False)
    kernel, outbox = harness.kernel, harness.kernel.outbox()
    envelopes = [
        Envelope.wrap(NoteWritten(note_id=n, body=value), idempotency_key=value, tenant_id=value, metadata={value: value})
        for n, value in enumerate(HOSTILE)
    ]
    async with kernel.database().session(system=True) as session:
        await outbox.add(envelopes, session=session)
    async with kernel.database().session(system=True) as session:
        rows = {row.id: row for row in (await session.execute(select(events))).all()}
        assert (await session.execute(text("SELECT count(*) FROM botcriptofy_outbox"))).scalar() == len(HOSTILE)
    for envelope, value in zip(envelopes, HOSTILE, strict=True):
        row = rows[envelope.id]
        assert (row.payload, row.idempotency_key, row.envelope_tenant_id, row.envelope_metadata) == (
            envelope.payload,
            value,
            value,
            {value: value},
        )
        assert row.occurred_at.replace(tzinfo=None) == envelope.occurred_at.replace(tzinfo=None)


def test_a_dollar_quoted_literal_ends_only_where_it_should():
    for value in [*HOSTILE, "", "o$", "$o", "a$o$b$oo$c"]:
        quoted = pg_text(value)
        delimiter = quoted[: quoted.index("$", 1) + 1]
        assert quoted.startswith(delimiter) and quoted.endswith(delimiter)
        assert quoted[len(delimiter) :].find(delimiter) == len(value)  # the first closing delimiter is the last one
    with pytest.raises(ValueError, match="NUL"):
        pg_text("a\x00b")


async def _prepared_on_server(session) -> set[str]:
    return set((await session.scalars(text("SELECT name FROM pg_prepared_statements WHERE name LIKE 'botcriptofy%'"))).all())


async def test_postgresql_prepares_the_outbox_insert_once_per_connection_and_falls_back_to_literal_rows_after_a_failed_prepare(
    kernel_harness, postgres_url
):
    from sqlalchemy.exc import IntegrityError

    import botcriptofy_storage

    settings = {"url": postgres_url, "relay_enabled": False, "pool_size": 1, "max_overflow": 0}
    harness = await kernel_harness(plugins={"storage": botcriptofy_storage, "sample": SamplePlugin()}, settings={"storage": settings})
    kernel = harness.kernel
    written = []
    # A rollback before the message went out prepares nothing.
    with pytest.raises(RuntimeError, match="declined"):
        async with kernel.database().session(system=True) as session:
            await session.execute(text("SELECT 1"))  # the transaction has begun: the row is held
            await kernel.events.publish(NoteWritten(note_id=0, body="never"), session=session)
            driver = await _driver(session)
            assert driver.outbox_rows[0].startswith("EXECUTE botcriptofy_outbox_add(")
            raise RuntimeError("declined")
    assert driver.prepared == set()
    for n in range(3):  # the first commit carries the PREPARE; the next ones only EXECUTE it
        async with kernel.database().session(system=True) as session:
            await session.execute(text("SELECT 1"))
            written.append(await kernel.events.publish(NoteWritten(note_id=n, body=f"row {n}"), session=session))
            assert (await _driver(session)) is driver  # the pool's only connection
            assert driver.prepared == ({"botcriptofy_outbox_add"} if n else set())
        assert driver.prepared == {"botcriptofy_outbox_add"}
    async with kernel.database().session(system=True) as session:
        assert await _prepared_on_server(session) == {"botcriptofy_outbox_add"}
        stored = {row.id: row.payload["body"] for row in (await session.execute(select(events))).all()}
    assert stored == {envelope.id: f"row {n}" for n, envelope in enumerate(written)}

    # A fresh connection whose first message (PREPARE, EXECUTE, COMMIT) fails: whether the PREPARE ran is
    # not known to the connection, so it writes literal INSERTs from then on, and they work.
    await kernel.database().engine.dispose()
    with pytest.raises(IntegrityError):
        async with kernel.database().session(system=True) as session:
            await session.execute(text("SELECT 1"))
            await kernel.outbox().add([written[0]], session=session)  # the same id again
            fresh = await _driver(session)
    assert fresh is not driver and fresh.prepared == set()
    async with kernel.database().session(system=True) as session:
        await session.execute(text("SELECT 1"))
        late = await kernel.events.publish(NoteWritten(note_id=9, body="literal"), session=session)
        assert (await _driver(session)) is fresh
        assert fresh.outbox_rows[0].startswith("INSERT INTO botcriptofy_outbox ")
    async with kernel.database().session(system=True) as session:
        assert (await session.execute(select(events.c.payload).where(events.c.id == late.id))).scalar_one()["body"] == "literal"


async def test_payloads_the_fast_encoder_does_not_take_are_stored_as_json_dumps_writes_them(storage_kernel):
    """orjson encodes outbox payloads; a dict key that is not a string or an int past 64 bits falls back to json.dumps."""
    import json

    harness = await storage_kernel(sample=SamplePlugin(), relay_enabled=False)
    kernel, outbox = harness.kernel, harness.kernel.outbox()
    payloads = [
        {"counts": {1: "one", 2: "two"}},
        {"big": 2**70, "negative": -(2**65)},
        {"text": "ação 日本 🚀 \\ \" $o$", "list": [1.5, None, True, {"deep": []}], "float": 0.1},
    ]
    envelopes = [Envelope.of("sample.raw", payload, metadata={"trace": "t"}) for payload in payloads]
    async with kernel.database().session(system=True) as session:
        await outbox.add(envelopes, session=session)
    async with kernel.database().session(system=True) as session:
        rows = {row.id: row for row in (await session.execute(select(events))).all()}
    for envelope, payload in zip(envelopes, payloads, strict=True):
        assert rows[envelope.id].payload == json.loads(json.dumps(payload))
        assert rows[envelope.id].envelope_metadata == {"trace": "t"}


def test_json_text_matches_json_dumps_and_falls_back_to_it():
    import json
    import math

    from botcriptofy_storage._outbox import json_text

    for value in ({"a": [1, 2.5, None, True, "ç"], "b": {}}, [], "x", 3, {1: "int key"}, {"big": 2**64}):
        assert json.loads(json_text(value)) == json.loads(json.dumps(value))
    assert json_text({1: "a"}) == json.dumps({1: "a"})  # the fallback, byte for byte
    assert json_text({"n": math.nan, "i": math.inf}) == '{"n":null,"i":null}'  # as pydantic's JSON mode writes them
