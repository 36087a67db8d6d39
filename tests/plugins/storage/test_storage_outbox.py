"""The transactional outbox: delivery after commit, never after rollback, per-handler retries, crash recovery, many relays."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from sqlalchemy import select, text

import botcriptofy_storage
from botcriptofy import Envelope, EventHandler, hookimpl
from botcriptofy.testing import wait_until
from botcriptofy_storage import TenantScopeError
from botcriptofy_storage._outbox import deliveries, events

from .storage_sample import Note, NoteWritten, SamplePlugin


def _state(harness):
    return harness.kernel.stash[botcriptofy_storage._state.STATE]


async def _delivery_rows(harness) -> dict[tuple[str, str], dict]:
    async with harness.kernel.database().session(system=True) as session:
        rows = (await session.execute(select(deliveries))).mappings().all()
    return {(row["event_id"], row["handler"]): dict(row) for row in rows}


async def _settled(harness, expected: int | None = None) -> dict[tuple[str, str], dict]:
    """Wait until the relay has recorded every outcome (no delivery is leased any more); return the rows."""
    rows: dict[tuple[str, str], dict] = {}

    async def settled() -> bool:
        nonlocal rows
        rows = await _delivery_rows(harness)
        return (expected is None or len(rows) == expected) and all(row["locked_by"] is None for row in rows.values())

    await wait_until(settled)
    return rows


async def _count(harness, table: str) -> int:
    async with harness.kernel.database().session(system=True) as session:
        return int((await session.execute(text(f"SELECT count(*) FROM {table}"))).scalar())


async def test_an_event_published_in_a_committed_transaction_is_delivered(storage_kernel):
    sample = SamplePlugin()
    harness = await storage_kernel(sample=sample)
    kernel = harness.kernel
    async with kernel.database().session(tenant_id="acme") as session:
        note = Note(body="hello")
        session.add(note)
        await session.flush()
        published = await kernel.events.publish(NoteWritten(note_id=note.id, body=note.body), session=session,
                                                idempotency_key=f"note:{note.id}")
        await asyncio.sleep(0.2)
        assert sample.seen == []  # nothing leaves before the commit
    await wait_until(lambda: len(sample.seen) == 1 and len(sample.audited) == 1)
    seen = sample.seen[0]
    assert isinstance(seen, Envelope)
    assert seen.id == published.id and seen.idempotency_key == f"note:{note.id}"
    assert seen.tenant_id == "acme"  # the session's tenant
    assert seen.event == NoteWritten(note_id=note.id, body="hello")
    assert seen.occurred_at == published.occurred_at and seen.attempt == 1
    rows = await _settled(harness, 2)
    assert {key[1]: row["status"] for key, row in rows.items()} == {"sample.record": "delivered", "sample.audit": "delivered"}


async def test_delivery_after_commit_does_not_wait_for_the_poll(storage_kernel):
    sample = SamplePlugin()
    harness = await storage_kernel(sample=sample, relay_poll_interval=30)
    await asyncio.sleep(0.1)  # the relay is now asleep for 30 s
    await harness.kernel.events.publish(NoteWritten(note_id=1, body="fast"))
    waited = await wait_until(lambda: len(sample.seen) == 1, timeout=5)
    assert waited < 2


async def test_an_event_published_in_a_rolled_back_transaction_is_never_delivered(storage_kernel):
    sample = SamplePlugin()
    harness = await storage_kernel(sample=sample)
    kernel = harness.kernel
    with pytest.raises(RuntimeError, match="payment declined"):
        async with kernel.database().session(tenant_id="acme") as session:
            await kernel.events.publish(NoteWritten(note_id=1, body="never"), session=session)
            raise RuntimeError("payment declined")
    await kernel.events.publish(NoteWritten(note_id=2, body="later"))  # a committed one, to know the relay ran
    await wait_until(lambda: len(sample.seen) == 1)
    await asyncio.sleep(0.2)
    assert [e.event.body for e in sample.seen] == ["later"]
    assert await _count(harness, "botcriptofy_outbox") == 1


async def test_a_failing_handler_does_not_block_others_and_is_retried(storage_kernel):
    sample = SamplePlugin(failures=2)
    harness = await storage_kernel(sample=sample)
    envelope = await harness.kernel.events.publish(NoteWritten(note_id=7, body="retry me"), idempotency_key="k-7")
    await wait_until(lambda: len(sample.seen) == 1)
    await wait_until(lambda: len(sample.audited) == 1, timeout=10)
    assert len(sample.seen) == 1  # the healthy handler got it once, not once per retry of the other
    audited = sample.audited[0]
    assert audited.attempt == 3 and audited.idempotency_key == "k-7"
    rows = await _settled(harness, 2)
    assert rows[(envelope.id, "sample.record")]["attempts"] == 1
    audit = rows[(envelope.id, "sample.audit")]
    assert audit["attempts"] == 3 and audit["status"] == "delivered" and audit["last_error"] is None


async def test_a_delivery_that_keeps_failing_is_marked_failed_with_its_last_error(storage_kernel):
    sample = SamplePlugin(failures=100)
    harness = await storage_kernel(sample=sample, max_attempts=3)
    envelope = await harness.kernel.events.publish(NoteWritten(note_id=8, body="doomed"))

    async def failed():
        return (await _delivery_rows(harness)).get((envelope.id, "sample.audit"), {}).get("status") == "failed"

    await wait_until(failed, timeout=10)
    audit = (await _delivery_rows(harness))[(envelope.id, "sample.audit")]
    assert audit["attempts"] == 3 and audit["last_error"] == "RuntimeError: audit log unavailable"
    await asyncio.sleep(0.3)
    assert sample.failures == 97  # no fourth attempt
    assert await _state(harness).relay.cleanup() == 0  # an event with a failed delivery is kept


async def test_events_committed_while_no_relay_runs_are_delivered_on_restart(storage_kernel, database_url):
    """The process dies between commit and delivery: the next process delivers from the table."""
    first = SamplePlugin()
    crashed = await storage_kernel(sample=first, relay_enabled=False)
    async with crashed.kernel.database().session(tenant_id="acme") as session:
        for n in range(3):
            await crashed.kernel.events.publish(NoteWritten(note_id=n, body=f"n{n}"), session=session)
    await asyncio.sleep(0.3)
    assert first.seen == []
    await crashed.close()

    second = SamplePlugin()
    await storage_kernel(sample=second)
    await wait_until(lambda: len(second.seen) == 3 and len(second.audited) == 3)
    assert sorted(e.event.note_id for e in second.seen) == [0, 1, 2]


async def test_a_delivery_claimed_by_a_worker_that_died_is_taken_over_after_its_lease(storage_kernel):
    sample = SamplePlugin()
    harness = await storage_kernel(sample=sample, relay_lease=0.5)
    relay = _state(harness).relay
    await relay.stop()
    envelope = await harness.kernel.events.publish(NoteWritten(note_id=9, body="orphaned"))
    claims = await relay.claim(harness.kernel.events)  # leased, then the worker "dies" before delivering
    assert {c.handler for c in claims} == {"sample.record", "sample.audit"}
    assert await relay.run_once() == 0  # still leased
    await asyncio.sleep(0.6)
    assert await relay.run_once() == 2
    assert [e.attempt for e in sample.seen] == [2]
    rows = await _settled(harness, 2)
    assert rows[(envelope.id, "sample.record")]["status"] == "delivered"


async def test_a_late_outcome_does_not_overwrite_the_worker_that_took_over(storage_kernel):
    harness = await storage_kernel(relay_lease=0.2)
    relay = _state(harness).relay
    await relay.stop()
    envelope = await harness.kernel.events.publish(NoteWritten(note_id=10, body="slow"))
    first_worker = relay.worker
    slow = await relay.claim(harness.kernel.events)  # the first worker hangs past its lease
    await asyncio.sleep(0.3)
    relay.worker = "another-worker"
    taken = await relay.claim(harness.kernel.events)
    assert {c.attempts for c in taken} == {2}
    relay.worker = first_worker
    await relay.record([(claim, RuntimeError("late")) for claim in slow])  # its late report changes nothing
    rows = await _delivery_rows(harness)
    assert {row["locked_by"] for key, row in rows.items() if key[0] == envelope.id} == {"another-worker"}
    assert {row["last_error"] for row in rows.values()} == {None}


async def test_concurrent_relays_lose_no_event_and_do_not_deliver_twice(storage_kernel, database_url):
    """Two processes (two runtimes with their own engines and relays) share one database."""
    a, b = SamplePlugin(), SamplePlugin()
    first = await storage_kernel(sample=a, relay_batch_size=7)
    second = await storage_kernel(sample=b, relay_batch_size=7)

    async def publish(harness, start: int) -> None:
        for n in range(start, start + 60):
            async with harness.kernel.database().session(tenant_id=f"t{n % 3}") as session:
                await harness.kernel.events.publish(NoteWritten(note_id=n, body="x"), session=session, idempotency_key=f"n{n}")

    await asyncio.gather(publish(first, 0), publish(second, 1000), publish(first, 2000))
    expected = {f"n{n}" for start in (0, 1000, 2000) for n in range(start, start + 60)}
    await wait_until(lambda: len(a.seen) + len(b.seen) >= len(expected) and len(a.audited) + len(b.audited) >= len(expected),
                     timeout=30)
    await asyncio.sleep(0.3)
    recorded = Counter(e.idempotency_key for e in (*a.seen, *b.seen))
    audited = Counter(e.idempotency_key for e in (*a.audited, *b.audited))
    assert set(recorded) == expected and set(audited) == expected
    assert max(recorded.values()) == 1 and max(audited.values()) == 1
    rows = await _settled(first, 2 * len(expected))
    assert len(rows) == 2 * len(expected) and {row["status"] for row in rows.values()} == {"delivered"}


async def test_the_relay_can_be_switched_off_and_on_live(storage_kernel, database_url):
    sample = SamplePlugin()
    harness = await storage_kernel(sample=sample)
    settings = {"url": database_url, "relay_poll_interval": 0.05}
    result = await harness.apply({"storage": {**settings, "relay_enabled": False}})
    assert result.changes["reconfigured"] == ["storage"]
    assert not _state(harness).relay.running
    await harness.kernel.events.publish(NoteWritten(note_id=1, body="parked"))
    await asyncio.sleep(0.3)
    assert sample.seen == []
    await harness.apply({"storage": {**settings, "relay_enabled": True}})
    await wait_until(lambda: len(sample.seen) == 1)


async def test_handlers_of_the_newest_generation_receive_events(storage_kernel, database_url):
    first, second = SamplePlugin(), SamplePlugin()
    harness = await storage_kernel(sample=first)
    harness.runtime.extra_plugins["sample"] = second  # a code upgrade of the sample plugin
    result = await harness.runtime.rescan(source="test")
    assert result.changes["restarted"] == ["sample"]
    await harness.kernel.events.publish(NoteWritten(note_id=3, body="new code"))
    await wait_until(lambda: len(second.seen) == 1)
    assert first.seen == []


async def test_a_tenant_session_cannot_publish_for_another_tenant(storage_kernel):
    harness = await storage_kernel()
    with pytest.raises(TenantScopeError, match="for tenant globex in a session of tenant acme"):
        async with harness.kernel.database().session(tenant_id="acme") as session:
            await harness.kernel.events.publish(NoteWritten(note_id=1, body="x"), session=session, tenant_id="globex")
    assert await _count(harness, "botcriptofy_outbox") == 0


async def test_the_outbox_refuses_a_foreign_session(storage_kernel):
    harness = await storage_kernel()
    with pytest.raises(TypeError, match="AsyncSession"):
        await harness.kernel.events.publish(NoteWritten(note_id=1, body="x"), session=object())


async def test_delivered_events_are_deleted_after_the_retention(storage_kernel):
    sample = SamplePlugin()
    harness = await storage_kernel(sample=sample, retention_hours=0.0001)
    await harness.kernel.events.publish(NoteWritten(note_id=1, body="old"))
    await wait_until(lambda: len(sample.seen) == 1 and len(sample.audited) == 1)

    async def all_delivered():
        return {row["status"] for row in (await _delivery_rows(harness)).values()} == {"delivered"}

    await wait_until(all_delivered)
    await asyncio.sleep(0.5)
    assert await _state(harness).relay.cleanup() == 1
    assert await _count(harness, "botcriptofy_outbox") == 0
    assert await _count(harness, "botcriptofy_outbox_delivery") == 0


async def test_events_without_subscribers_are_dispatched_and_kept_only_as_events(storage_kernel):
    harness = await storage_kernel(plugins={"sample": _NoHandlers()})
    await harness.kernel.events.publish(NoteWritten(note_id=1, body="unheard"))

    async def dispatched():
        async with harness.kernel.database().session(system=True) as session:
            return (await session.scalar(select(events.c.dispatched_at))) is not None

    await wait_until(dispatched)
    assert await _count(harness, "botcriptofy_outbox_delivery") == 0


class _NoHandlers(SamplePlugin):
    def register_event_handlers(self, kernel):  # not a hookimpl: this variant subscribes nothing
        return None


class _SlowAndFast:
    def __init__(self) -> None:
        self.fast: list[Envelope] = []
        self.slow: list[Envelope] = []

    @hookimpl
    def register_event_handlers(self, kernel):
        async def slow(envelope: Envelope) -> None:
            await asyncio.sleep(0.6)
            self.slow.append(envelope)

        def fast(envelope: Envelope) -> None:
            self.fast.append(envelope)

        return [EventHandler("timing.slow", slow, events=(NoteWritten,)), EventHandler("timing.fast", fast, events=(NoteWritten,))]


async def test_a_slow_handler_delays_only_itself(storage_kernel):
    timing = _SlowAndFast()
    harness = await storage_kernel(plugins={"sample": timing})
    async with harness.kernel.database().session(system=True) as session:
        for n in range(4):
            await harness.kernel.events.publish(NoteWritten(note_id=n, body="x"), session=session)
    fast = await wait_until(lambda: len(timing.fast) == 4, timeout=10)
    assert fast < 1.8  # one after the other behind the slow handler, it would take at least 2.4 s
    await wait_until(lambda: len(timing.slow) == 4, timeout=10)
    assert [e.event.note_id for e in timing.fast] == [e.event.note_id for e in timing.slow] == [0, 1, 2, 3]  # each in order


async def test_outbox_rows_read_back_as_written_and_a_failed_insert_rolls_the_transaction_back(storage_kernel):
    from sqlalchemy.exc import IntegrityError

    sample = SamplePlugin()
    harness = await storage_kernel(sample=sample, relay_enabled=False)
    kernel, outbox = harness.kernel, harness.kernel.outbox()
    first = Envelope.wrap(NoteWritten(note_id=7, body="ação <&> \"quoted\""), idempotency_key="k7", metadata={"traceparent": "00-ab-cd-01"})
    second = Envelope.wrap(NoteWritten(note_id=8, body="two"), tenant_id="acme")
    async with kernel.database().session(tenant_id="acme") as session:
        session.add(Note(body="kept"))
        await outbox.add([first, second], session=session)
    async with kernel.database().session(system=True) as session:
        rows = {row.id: row for row in (await session.execute(select(events))).all()}
    assert set(rows) == {first.id, second.id}
    stored = rows[first.id]
    assert (stored.type, stored.payload, stored.idempotency_key, stored.envelope_tenant_id) == (
        "sample.note_written", first.payload, "k7", "acme"
    )
    assert stored.occurred_at.replace(tzinfo=None) == first.occurred_at.replace(tzinfo=None) and stored.dispatched_at is None
    assert stored.envelope_metadata == {"traceparent": "00-ab-cd-01"} and not rows[second.id].envelope_metadata

    # The same envelope id again: the database refuses it and nothing of that transaction remains.
    with pytest.raises(IntegrityError):
        async with kernel.database().session(tenant_id="acme") as session:
            session.add(Note(body="lost"))
            await session.flush()
            await outbox.add([first], session=session)
    assert await _count(harness, "botcriptofy_outbox") == 2
    async with kernel.database().session(tenant_id="acme") as session:
        assert sorted((await session.scalars(select(Note.body))).all()) == ["kept"]


async def test_the_backlog_counts_events_not_fanned_out_and_deliveries_waiting(storage_kernel):
    harness = await storage_kernel(sample=SamplePlugin(), relay_lease=0.5)
    relay = _state(harness).relay
    await relay.stop()
    metrics = harness.kernel.metrics
    await relay.count_backlog()
    assert metrics.get_sample_value("botcriptofy_outbox_backlog") == 0
    await harness.kernel.events.publish(NoteWritten(note_id=20, body="one"))
    await harness.kernel.events.publish(NoteWritten(note_id=21, body="two"))
    assert await relay.count_backlog() == 2  # two events, not fanned out yet
    assert metrics.get_sample_value("botcriptofy_outbox_backlog") == 2
    await relay.claim(harness.kernel.events)  # fanned out: two handlers each, leased, not delivered
    assert await relay.count_backlog() == 4
    await asyncio.sleep(0.6)  # the leases run out, as if the worker had died
    assert await relay.run_once() == 4
    assert await relay.count_backlog() == 0
    assert metrics.get_sample_value("botcriptofy_outbox_backlog") == 0


async def test_a_burst_of_commits_costs_the_relay_fewer_write_transactions_than_events(storage_kernel):
    """Woken by a commit, the relay waits relay_batch_delay and takes the burst in one round; each round's outcomes
    are written with the next round's claim. Events used to cost two write transactions each
    (claim, then record), each waiting for SQLite's one writer alongside the requests."""
    sample = SamplePlugin()
    harness = await storage_kernel(sample=sample, relay_poll_interval=30, relay_batch_delay=0.5)
    relay = _state(harness).relay
    await asyncio.sleep(0.1)  # the relay is asleep: only commits wake it
    database = relay.database
    batch = database.write_batch
    writes = 0

    async def counting(work):
        nonlocal writes
        writes += 1
        return await batch(work)

    database.write_batch = counting
    try:
        for n in range(20):  # twenty requests' commits, one right after the other
            await harness.kernel.events.publish(NoteWritten(note_id=n, body="burst"), idempotency_key=f"burst:{n}")
        rows = await _settled(harness, 40)
    finally:
        database.write_batch = batch
    assert writes >= 1  # the relay's transactions are the ones counted
    assert {row["status"] for row in rows.values()} == {"delivered"}
    assert sorted(e.idempotency_key for e in sample.seen) == sorted(f"burst:{n}" for n in range(20))
    # Two per event before (a claim, then a record). The bound leaves room for a loaded machine, where the twenty
    # commits take longer than the batch delay.
    assert writes <= 8, f"{writes} write transactions for 20 events"


async def test_the_last_rounds_outcomes_are_written_when_the_relay_stops(storage_kernel):
    sample = SamplePlugin()
    harness = await storage_kernel(sample=sample, relay_poll_interval=30, relay_batch_delay=0)
    relay = _state(harness).relay
    recorded = asyncio.Event()
    original = relay._round

    async def round_then_park(done):
        result = await original(done)
        if result[1]:
            recorded.set()
            relay._stopping = True  # stop before the next round would write these outcomes with its claim
        return result

    relay._round = round_then_park
    await harness.kernel.events.publish(NoteWritten(note_id=1, body="last"))
    await asyncio.wait_for(recorded.wait(), 10)
    await relay.stop()
    rows = await _delivery_rows(harness)
    assert {row["status"] for row in rows.values()} == {"delivered"} and len(rows) == 2
    assert all(row["locked_by"] is None for row in rows.values())
