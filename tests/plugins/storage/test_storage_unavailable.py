"""A database that cannot serve answers 503 with Retry-After, quickly, and the service recovers by itself."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select

import botcriptofy_storage
from botcriptofy import Route, ServiceUnavailable, hookimpl

from .storage_sample import Note, SamplePlugin

# A guard against hanging, not a measurement: the old behaviour waited 30 s for a pool connection.
GUARD = 15.0


class Writer:
    """Routes that write and read one tenant's notes, as any plugin's route would."""

    def __init__(self) -> None:
        self.hold: asyncio.Event | None = None
        self.holding = asyncio.Event()

    @hookimpl
    def register_routes(self, kernel):
        async def write(request):
            async with kernel.database().session(tenant_id="acme") as session:
                session.add(Note(body="written"))
                if self.hold is not None:
                    await session.flush()  # takes a connection and keeps it until the hold ends
                    self.holding.set()
                    await self.hold.wait()
            return {"written": True}

        async def count(request):
            async with kernel.database().session(tenant_id="acme") as session:
                return {"notes": await session.scalar(select(func.count()).select_from(Note))}

        return [Route("/notes", write, methods=["POST"], status_code=201), Route("/notes", count)]


def _unavailable(harness, reason: str) -> float:
    return harness.kernel.metrics.get_sample_value("botcriptofy_storage_unavailable_total", {"reason": reason}) or 0.0


async def _request(harness, method: str, path: str):
    return await asyncio.wait_for(harness.client.request(method, path), GUARD)


def _assert_503(response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert int(response.headers["retry-after"]) >= 1
    problem = response.json()
    assert problem["status"] == 503 and problem["dependency"] == "database"


async def test_postgres_going_away_answers_503_and_recovers_when_it_returns(throwaway_postgres, kernel_harness):
    harness = await kernel_harness(
        plugins={"storage": botcriptofy_storage, "sample": SamplePlugin(), "writer": Writer()},
        settings={
            "storage": {"url": throwaway_postgres.url, "relay_enabled": False, "pool_timeout": 1, "connect_timeout": 1, "retry_after": 3}
        },
    )
    assert (await _request(harness, "POST", "/notes")).status_code == 201

    throwaway_postgres.stop()
    for method in ("POST", "GET", "POST"):  # pooled connections are dead, new ones refused: each request gets a clear answer
        response = await _request(harness, method, "/notes")
        _assert_503(response)
        assert response.headers["retry-after"] == "3"
    assert _unavailable(harness, "connection_lost") + _unavailable(harness, "unreachable") >= 3
    assert (await harness.client.get("/-/ready")).status_code == 503

    throwaway_postgres.start()
    assert (await _request(harness, "POST", "/notes")).status_code == 201  # no restart: the pool replaced its connections
    assert (await _request(harness, "GET", "/notes")).json() == {"notes": 2}
    assert (await harness.client.get("/-/ready")).status_code == 200


async def test_a_connection_lost_in_a_unit_of_work_is_a_service_unavailable(throwaway_postgres, kernel_harness):
    harness = await kernel_harness(
        plugins={"storage": botcriptofy_storage, "sample": SamplePlugin()},
        settings={"storage": {"url": throwaway_postgres.url, "relay_enabled": False}},
    )
    db = harness.kernel.database()
    with pytest.raises(ServiceUnavailable) as raised:
        async with db.session(tenant_id="acme") as session:
            session.add(Note(body="never committed"))
            await session.flush()
            throwaway_postgres.stop()
    assert raised.value.status == 503 and raised.value.headers["Retry-After"] == "2"
    throwaway_postgres.start()
    async with db.session(tenant_id="acme") as session:
        assert await session.scalar(select(func.count()).select_from(Note)) == 0


async def test_an_exhausted_pool_answers_503_within_pool_timeout(database_url, kernel_harness):
    writer = Writer()
    writer.hold = asyncio.Event()
    harness = await kernel_harness(
        plugins={"storage": botcriptofy_storage, "sample": SamplePlugin(), "writer": writer},
        settings={"storage": {"url": database_url, "relay_enabled": False, "pool_size": 1, "max_overflow": 0, "pool_timeout": 0.3}},
    )
    held = asyncio.create_task(harness.client.post("/notes"))
    await asyncio.wait_for(writer.holding.wait(), GUARD)
    _assert_503(await _request(harness, "GET", "/notes"))
    assert _unavailable(harness, "pool_timeout") == 1
    writer.hold.set()
    assert (await held).status_code == 201
    assert (await _request(harness, "GET", "/notes")).json() == {"notes": 1}


async def test_errors_that_are_not_about_the_connection_stay_what_they_are(storage_kernel):
    harness = await storage_kernel()
    db = harness.kernel.database()
    with pytest.raises(OSError, match="the caller's own"):
        async with db.session(tenant_id="acme"):
            raise OSError("the caller's own file error")
    assert db.stats.counts.total() == 0


async def test_a_new_connection_ended_under_its_first_query_is_a_503(postgres_url, kernel_harness, monkeypatch):
    """PostgreSQL shutting down can end a connection just made, under its first query (the backend pid): asyncpg then
    raises an internal "another operation is in progress" error. Seen live as a 500; the database is unreachable: 503."""
    import asyncpg

    from botcriptofy_storage._driver import PostgresConnection

    harness = await kernel_harness(
        plugins={"storage": botcriptofy_storage, "sample": SamplePlugin(), "writer": Writer()},
        settings={"storage": {"url": postgres_url, "relay_enabled": False}},
    )
    assert (await _request(harness, "POST", "/notes")).status_code == 201
    await harness.kernel.database().engine.dispose()  # the next request makes a new connection
    prepare = PostgresConnection.prepare

    async def ended(self, query, *args, **kwargs):
        if "pg_backend_pid" in query:
            raise asyncpg.exceptions.InternalClientError("cannot switch to state 12; another operation (2) is in progress")
        return await prepare(self, query, *args, **kwargs)

    monkeypatch.setattr(PostgresConnection, "prepare", ended)
    _assert_503(await _request(harness, "GET", "/notes"))
    assert _unavailable(harness, "unreachable") >= 1
    monkeypatch.setattr(PostgresConnection, "prepare", prepare)
    assert (await _request(harness, "GET", "/notes")).json() == {"notes": 1}
