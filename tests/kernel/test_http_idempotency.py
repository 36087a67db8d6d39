"""Idempotency-Key on unsafe /v1 requests: one execution, the first response replayed, per caller, across workers."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from pydantic import BaseModel
from sqlalchemy import func, select, text

import botcriptofy_auth
import botcriptofy_storage
from botcriptofy import Actor, Route, ServiceUnavailable, hookimpl
from botcriptofy_auth._accounts import mark_email_verified


class OrderIn(BaseModel):
    symbol: str
    quantity: int


class Orders:
    """Counts executions; ``gate`` (when set) holds each request until the test releases it."""

    def __init__(self) -> None:
        self.executions = 0
        self.failures_left = 0
        self.gate: asyncio.Event | None = None
        self.entered = asyncio.Event()

    @hookimpl
    def register_routes(self, kernel):
        async def place(request, body: OrderIn):
            self.executions += 1
            self.entered.set()
            if self.gate is not None:
                await self.gate.wait()
            if self.failures_left:
                self.failures_left -= 1
                raise ServiceUnavailable("The exchange is unreachable.", dependency="exchange")
            return {"order": self.executions, "symbol": body.symbol, "quantity": body.quantity}

        async def unversioned(request):
            self.executions += 1
            return {"order": self.executions}

        async def listing(request):
            self.executions += 1
            return {"order": self.executions}

        return [
            Route("/v1/orders", place, methods=["POST"], body=OrderIn, status_code=201),
            Route("/v1/orders", listing),
            Route("/orders", unversioned, methods=["POST"]),
        ]


class HeaderIdentity:
    @hookimpl
    def actor_from_request(self, kernel, request):
        who = request.headers.get("x-test-user")
        return None if who is None else Actor(id=who, kind="user")


ORDER = {"symbol": "BTCBRL", "quantity": 2}


def key_headers(key: str, **extra: str) -> dict[str, str]:
    return {"idempotency-key": key, **extra}


@pytest.fixture
async def orders_harness(kernel_harness):
    orders = Orders()
    harness = await kernel_harness(plugins={"orders": orders, "identity": HeaderIdentity()})
    return orders, harness


async def test_a_retry_gets_the_first_response_without_running_twice(orders_harness):
    orders, harness = orders_harness
    first = await harness.client.post("/v1/orders", json=ORDER, headers=key_headers("k-1"))
    retry = await harness.client.post("/v1/orders", json=ORDER, headers=key_headers("k-1"))
    assert first.status_code == retry.status_code == 201
    assert retry.content == first.content and retry.json()["order"] == 1
    assert retry.headers["content-type"] == "application/json" and retry.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert orders.executions == 1
    other = await harness.client.post("/v1/orders", json=ORDER, headers=key_headers("k-2"))
    assert other.json()["order"] == 2 and orders.executions == 2


async def test_the_same_key_with_another_body_is_422(orders_harness):
    orders, harness = orders_harness
    await harness.client.post("/v1/orders", json=ORDER, headers=key_headers("k-1"))
    reused = await harness.client.post("/v1/orders", json={**ORDER, "quantity": 3}, headers=key_headers("k-1"))
    assert reused.status_code == 422 and reused.headers["content-type"] == "application/problem+json"
    assert "Idempotency-Key" in reused.json()["detail"]
    assert orders.executions == 1


async def test_keys_are_scoped_per_caller(orders_harness):
    orders, harness = orders_harness
    ana = await harness.client.post("/v1/orders", json=ORDER, headers=key_headers("shared", **{"x-test-user": "ana"}))
    bia = await harness.client.post("/v1/orders", json=ORDER, headers=key_headers("shared", **{"x-test-user": "bia"}))
    anonymous = await harness.client.post("/v1/orders", json=ORDER, headers=key_headers("shared"))
    assert [ana.json()["order"], bia.json()["order"], anonymous.json()["order"]] == [1, 2, 3]
    again = await harness.client.post("/v1/orders", json=ORDER, headers=key_headers("shared", **{"x-test-user": "bia"}))
    assert again.json()["order"] == 2 and orders.executions == 3


async def test_only_unsafe_v1_requests_with_the_header_are_concerned(orders_harness):
    orders, harness = orders_harness
    for _ in range(2):
        await harness.client.post("/v1/orders", json=ORDER)
        await harness.client.get("/v1/orders", headers=key_headers("k-get"))
        await harness.client.post("/orders", headers=key_headers("k-unversioned"))
    assert orders.executions == 6


@pytest.mark.parametrize("key", ["", "x" * 256, "tab\there", "é"])
async def test_a_malformed_key_is_400(orders_harness, key):
    orders, harness = orders_harness
    response = await harness.client.post("/v1/orders", json=ORDER, headers={"idempotency-key": key.encode("utf-8")})
    assert response.status_code == 400 and response.headers["content-type"] == "application/problem+json"
    assert orders.executions == 0


async def test_server_errors_are_not_kept_so_a_retry_runs_again(orders_harness):
    orders, harness = orders_harness
    orders.failures_left = 1
    failed = await harness.client.post("/v1/orders", json=ORDER, headers=key_headers("k-1"))
    assert failed.status_code == 503
    retried = await harness.client.post("/v1/orders", json=ORDER, headers=key_headers("k-1"))
    assert retried.status_code == 201 and orders.executions == 2
    assert (await harness.client.post("/v1/orders", json=ORDER, headers=key_headers("k-1"))).json() == retried.json()


async def test_a_concurrent_duplicate_gets_409_and_the_work_runs_once(orders_harness):
    orders, harness = orders_harness
    orders.gate = asyncio.Event()
    first = asyncio.create_task(harness.client.post("/v1/orders", json=ORDER, headers=key_headers("k-1")))
    await asyncio.wait_for(orders.entered.wait(), 5)
    duplicate = await harness.client.post("/v1/orders", json=ORDER, headers=key_headers("k-1"))
    assert duplicate.status_code == 409 and duplicate.headers["retry-after"] == "1"
    orders.gate.set()
    assert (await first).status_code == 201
    replay = await harness.client.post("/v1/orders", json=ORDER, headers=key_headers("k-1"))
    assert replay.json() == (await first).json() and orders.executions == 1


# -- the storage plugin's durable store, on SQLite and PostgreSQL ------------------------------


async def test_two_workers_sharing_a_database_run_a_request_once(kernel_harness, database_url):
    orders_a, orders_b = Orders(), Orders()
    settings = {"storage": {"url": database_url, "relay_enabled": False}}
    worker_a = await kernel_harness(plugins={"storage": botcriptofy_storage, "orders": orders_a}, settings=settings)
    worker_b = await kernel_harness(plugins={"storage": botcriptofy_storage, "orders": orders_b}, settings=settings)
    orders_a.gate = asyncio.Event()
    first = asyncio.create_task(worker_a.client.post("/v1/orders", json=ORDER, headers=key_headers("order-42")))
    await asyncio.wait_for(orders_a.entered.wait(), 10)
    duplicate = await worker_b.client.post("/v1/orders", json=ORDER, headers=key_headers("order-42"))
    assert duplicate.status_code == 409
    orders_a.gate.set()
    done = await first
    assert done.status_code == 201
    replay = await worker_b.client.post("/v1/orders", json=ORDER, headers=key_headers("order-42"))
    assert replay.status_code == 201 and replay.content == done.content and replay.headers["idempotent-replayed"] == "true"
    reused = await worker_b.client.post("/v1/orders", json={**ORDER, "quantity": 9}, headers=key_headers("order-42"))
    assert reused.status_code == 422
    assert orders_a.executions + orders_b.executions == 1
    # Only a digest of the caller and key is stored, never the client's key.
    async with worker_a.kernel.database().session(system=True) as session:
        stored = (await session.execute(text("SELECT key, status FROM botcriptofy_idempotency"))).all()
    assert len(stored) == 1 and stored[0].status == 201 and "order-42" not in stored[0].key


async def test_racing_workers_claim_a_key_once(kernel_harness, database_url):
    settings = {"storage": {"url": database_url, "relay_enabled": False}}
    workers = [await kernel_harness(plugins={"storage": botcriptofy_storage}, settings=settings) for _ in range(2)]
    stores = [worker.kernel.hook.idempotency_store(kernel=worker.kernel) for worker in workers]
    for round_ in range(5):
        key = f"race-{round_}"
        results = await asyncio.gather(*(stores[n % 2].claim(key, "fp", ttl=60, lease=60) for n in range(6)))
        assert sum(result is None for result in results) == 1, results


async def test_expired_keys_and_abandoned_claims_free_themselves(kernel_harness, database_url):
    harness = await kernel_harness(plugins={"storage": botcriptofy_storage}, settings={"storage": {"url": database_url}})
    store = harness.kernel.hook.idempotency_store(kernel=harness.kernel)
    assert await store.claim("abandoned", "fp", ttl=60, lease=1.0) is None
    assert (await store.claim("abandoned", "fp", ttl=60, lease=60)).response is None  # still held
    await asyncio.sleep(1.1)
    assert await store.claim("abandoned", "other", ttl=60, lease=60) is None  # the lease ran out: taken over
    from botcriptofy import StoredResponse

    await store.complete("abandoned", StoredResponse(201, (("content-type", "application/json"),), b"{}"), ttl=1.0)
    found = await store.claim("abandoned", "other", ttl=60, lease=60)
    assert found.response == StoredResponse(201, (("content-type", "application/json"),), b"{}")
    await asyncio.sleep(1.1)
    assert await store.claim("abandoned", "new", ttl=60, lease=60) is None  # kept ttl seconds, then gone
    await store.release("abandoned")
    assert await store.claim("abandoned", "newer", ttl=60, lease=60) is None


async def test_sign_up_retried_with_its_key_creates_one_account(kernel_harness, database_url):
    settings = {
        "storage": {"url": database_url, "relay_poll_interval": 0.2},
        "auth": {"argon2_time_cost": 1, "argon2_memory_cost": 1024, "argon2_parallelism": 1},
    }
    harness = await kernel_harness(plugins={"storage": botcriptofy_storage, "auth": botcriptofy_auth}, settings=settings)
    body = {"email": "ana@example.com", "password": "correct horse battery staple", "name": "Ana", "account_type": "trader"}
    key = str(uuid.uuid4())
    first = await harness.client.post("/v1/auth/signup", json=body, headers={"idempotency-key": key})
    retry = await harness.client.post("/v1/auth/signup", json=body, headers={"idempotency-key": key})
    assert first.status_code == retry.status_code == 201
    assert retry.json() == first.json()
    without_key = await harness.client.post("/v1/auth/signup", json=body)
    assert without_key.status_code == 409  # the account exists once: the retry did not try again
    async with harness.kernel.database().session(system=True) as session:
        users = (await session.execute(select(func.count()).select_from(text("auth_users")))).scalar_one()
    assert users == 1


class ApiKeyPlans:
    @hookimpl
    def entitlements_for(self, kernel, tenant_id):
        from botcriptofy import Entitlements

        return Entitlements(plan="pro", limits={}, features=frozenset({"api_keys"}))


async def test_api_key_creation_retried_with_its_key_mints_one_key(kernel_harness, database_url):
    settings = {
        "storage": {"url": database_url, "relay_poll_interval": 0.2},
        "auth": {"argon2_time_cost": 1, "argon2_memory_cost": 1024, "argon2_parallelism": 1},
    }
    plugins = {"storage": botcriptofy_storage, "auth": botcriptofy_auth, "plans": ApiKeyPlans()}
    harness = await kernel_harness(plugins=plugins, settings=settings)
    body = {"email": "bot@example.com", "password": "correct horse battery staple", "name": "Bot", "account_type": "trader"}
    token = (await harness.client.post("/v1/auth/signup", json=body)).json()["tokens"]["access_token"]
    await mark_email_verified(harness.kernel, email="bot@example.com", by="test")  # keys need a verified address
    session = {"authorization": f"Bearer {token}", "idempotency-key": "create-grid-bot-key"}
    request = {"name": "grid bot", "scopes": ["trading:read"]}
    first = await harness.client.post("/v1/auth/api-keys", headers=session, json=request)
    retry = await harness.client.post("/v1/auth/api-keys", headers=session, json=request)
    assert first.status_code == retry.status_code == 201, first.text
    assert retry.json()["key"] == first.json()["key"] and retry.headers["cache-control"] == "no-store"
    listed = (await harness.client.get("/v1/auth/api-keys", headers={"authorization": f"Bearer {token}"})).json()
    assert [item["id"] for item in listed] == [first.json()["id"]]


class FlakyStore:
    """The memory store, but ``complete`` and ``release`` fail as a store does when its database has just gone down."""

    def __init__(self) -> None:
        from botcriptofy._idempotency import MemoryIdempotencyStore

        self.inner = MemoryIdempotencyStore()
        self.down = False

    async def claim(self, key, fingerprint, *, ttl, lease):
        return await self.inner.claim(key, fingerprint, ttl=ttl, lease=lease)

    async def complete(self, key, response, *, ttl):
        if self.down:
            raise ServiceUnavailable("The database is unreachable; nothing was written.", dependency="database")
        await self.inner.complete(key, response, ttl=ttl)

    async def release(self, key):
        if self.down:
            raise ServiceUnavailable("The database is unreachable; nothing was written.", dependency="database")
        await self.inner.release(key)

    @hookimpl
    def idempotency_store(self, kernel):
        return self


async def test_a_store_failing_after_the_work_never_turns_the_answer_into_a_500(kernel_harness, caplog):
    """The database went down while the request ran: its own answer (a 503 to retry, or the work's 201) still reaches
    the client, instead of a 500 or a dropped connection because the key could not be released or completed."""
    orders, store = Orders(), FlakyStore()
    harness = await kernel_harness(plugins={"orders": orders, "identity": HeaderIdentity(), "keys": store})
    orders.failures_left = 1
    store.down = True
    failed = await harness.client.post("/v1/orders", json=ORDER, headers=key_headers("k-down-1"))
    assert failed.status_code == 503 and failed.headers["retry-after"]
    assert failed.json()["title"] and "exchange" in failed.json()["detail"]
    done = await harness.client.post("/v1/orders", json=ORDER, headers=key_headers("k-down-2"))
    assert done.status_code == 201 and done.json() == {"order": 2, **ORDER}  # the work happened: its answer is delivered
    assert orders.executions == 2
    assert "Idempotency-Key" in caplog.text
    store.down = False
    # The keys stay claimed until their lease ends: a retry meanwhile is told to wait, it does not run again.
    retried = await harness.client.post("/v1/orders", json=ORDER, headers=key_headers("k-down-2"))
    assert retried.status_code == 409 and retried.headers["retry-after"] and orders.executions == 2
