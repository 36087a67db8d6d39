"""What a Redis entry may contain: data only by default; pickles only when signed with the service's key.

Someone who can write one key in Redis must not run code in the workers that read it. The tests
write hostile entries straight into the real Redis, as such an attacker would.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import struct
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from pydantic import ValidationError

import botcriptofy_auth
import botcriptofy_cache
import botcriptofy_storage
from botcriptofy import Entitlements, hookimpl
from botcriptofy_auth._accounts import mark_email_verified
from botcriptofy_billing import BillingPlugin
from botcriptofy_cache import CacheSettings

HEAD = struct.Struct(">BdqH")  # the entry header: format byte, expiry, write id, length of the tags
KEY = "k" * 32
OTHER_KEY = "o" * 32


class RunsCode:
    """A pickle that creates a directory when loaded: proof that loading an entry ran the attacker's code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def hostile_pickle(marker: Path, fmt: int = 1) -> bytes:
    """An entry as the cache wrote pickles before it had any trust model: format byte 1, no signature."""
    return HEAD.pack(fmt, 0.0, 7, 0) + pickle.dumps(RunsCode(marker))


async def overwrite(redis_url: str, key: str, raw: bytes) -> None:
    client = aioredis.Redis.from_url(redis_url)
    try:
        await client.set(key, raw)
    finally:
        await client.aclose()


async def read_raw(redis_url: str, key: str) -> bytes:
    client = aioredis.Redis.from_url(redis_url)
    try:
        return await client.get(key)
    finally:
        await client.aclose()


@pytest.mark.parametrize("backend", ["redis", "two-layer"])
async def test_a_pickle_written_into_redis_runs_no_code_by_default(make_cache, redis_url, redis_prefix, tmp_path, backend, caplog):
    caplog.set_level(logging.WARNING, logger="botcriptofy.cache")
    cache = await make_cache(backend=backend)
    await cache.set("session", {"user": "alice"})
    marker = tmp_path / "owned"
    await overwrite(redis_url, f"{redis_prefix}v:default::session", hostile_pickle(marker))
    reader = await make_cache(backend=backend)  # another worker, with nothing in process yet

    assert await reader.get("session") is None  # refused: a miss, not an error
    assert not marker.exists()
    assert await reader.get_or_set("session", lambda: {"user": "reloaded"}) == {"user": "reloaded"}
    assert not marker.exists()
    assert reader.stats()["_"]["rejected_entries"] == {"pickle-not-allowed": 2}
    assert any("refused" in r.getMessage() and "session" in r.getMessage() for r in caplog.records)


async def test_the_default_serializer_is_json_and_entries_are_plain_json(make_cache, redis_url, redis_prefix):
    assert CacheSettings().serializer == "json"
    cache = await make_cache(backend="redis")
    await cache.set("plan", {"name": "pro", "limits": [1, 2], "price": 29.0, "trial": None})
    raw = await read_raw(redis_url, f"{redis_prefix}v:default::plan")
    fmt, _, _, length = HEAD.unpack_from(raw)
    assert fmt == 2
    assert json.loads(raw[HEAD.size + length :]) == {"name": "pro", "limits": [1, 2], "price": 29.0, "trial": None}


@pytest.mark.parametrize("backend", ["memory", "redis", "two-layer"])
async def test_a_value_that_is_not_json_data_is_refused_on_every_backend(make_cache, backend):
    cache = await make_cache(backend=backend)
    with pytest.raises(TypeError, match=r"namespace 'orders'.*key 'when'.*datetime.*serializer"):
        await cache.set("when", {"at": datetime.now(UTC)}, namespace="orders")
    with pytest.raises(TypeError, match="not JSON data"):
        await cache.get_or_set("obj", object)
    assert await cache.get("when", namespace="orders") is None


def test_pickle_needs_a_signing_key():
    with pytest.raises(ValidationError, match="signing_key") as caught:
        CacheSettings(serializer="pickle")
    assert "run code" in str(caught.value)
    with pytest.raises(ValidationError, match="at least 32 characters"):
        CacheSettings(serializer="pickle", signing_key="short")
    assert CacheSettings(serializer="pickle", signing_key=KEY).signing_key.get_secret_value() == KEY


async def test_signed_pickles_round_trip_and_tampering_is_refused(make_cache, redis_url, redis_prefix, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="botcriptofy.cache")
    writer = await make_cache(backend="redis", serializer="pickle", signing_key=KEY)
    moment = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    await writer.set("when", {"at": moment, "ids": (1, 2)})
    reader = await make_cache(backend="redis", serializer="pickle", signing_key=KEY)
    assert await reader.get("when") == {"at": moment, "ids": (1, 2)}

    key = f"{redis_prefix}v:default::when"
    signed = await read_raw(redis_url, key)
    marker = tmp_path / "owned"
    # 1. The attacker replaces the body but cannot sign it.
    length = HEAD.unpack_from(signed)[3]
    forged = signed[: HEAD.size + length + 32] + pickle.dumps(RunsCode(marker))
    await overwrite(redis_url, key, forged)
    assert await reader.get("when") is None
    # 2. An unsigned pickle (the old format) is refused too.
    await overwrite(redis_url, key, hostile_pickle(marker))
    assert await reader.get("when") is None
    # 3. A pickle signed with another service's key is refused.
    stranger = await make_cache(backend="redis", serializer="pickle", signing_key=OTHER_KEY, prefix=redis_prefix + "x:")
    await stranger.set("when", RunsCode(marker))
    await overwrite(redis_url, key, await read_raw(redis_url, f"{redis_prefix}x:v:default::when"))
    assert await reader.get("when") is None
    # 4. Flipping the format byte to "unsigned JSON" does not get around the signature either.
    await overwrite(redis_url, key, bytes([2]) + signed[1:])
    assert await reader.get("when") is None

    assert not marker.exists()
    assert reader.stats()["_"]["rejected_entries"] == {"bad-signature": 2, "pickle-not-allowed": 1, "unsigned": 1}
    assert any("refused" in r.getMessage() for r in caplog.records)


async def test_with_a_signing_key_json_entries_are_signed_too(make_cache, redis_url, redis_prefix):
    """A key also protects data entries: a forged cached caller (say, super_admin: true) is refused."""
    cache = await make_cache(backend="redis", signing_key=KEY)
    await cache.set("principal", {"user": "alice", "super_admin": False})
    key = f"{redis_prefix}v:default::principal"
    raw = await read_raw(redis_url, key)
    _, _, _, length = HEAD.unpack_from(raw)
    body_at = HEAD.size + length + 32
    assert json.loads(raw[body_at:]) == {"user": "alice", "super_admin": False}
    await overwrite(redis_url, key, raw[:body_at] + json.dumps({"user": "alice", "super_admin": True}).encode())
    assert await cache.get("principal") is None
    unsigned = await make_cache(backend="redis", prefix=redis_prefix + "u:")
    await unsigned.set("principal", {"user": "mallory", "super_admin": True})
    await overwrite(redis_url, key, await read_raw(redis_url, f"{redis_prefix}u:v:default::principal"))
    assert await cache.get("principal") is None
    assert cache.stats()["_"]["rejected_entries"] == {"bad-signature": 1, "unsigned": 1}


async def test_a_rotated_key_still_reads_entries_signed_with_the_previous_one(make_cache):
    old = await make_cache(backend="redis", serializer="pickle", signing_key=OTHER_KEY)
    await old.set("k", {"v": 1})
    new = await make_cache(backend="redis", serializer="pickle", signing_key=KEY, previous_signing_keys=[OTHER_KEY])
    assert await new.get("k") == {"v": 1}
    await new.set("k", {"v": 2})
    assert await old.get("k") is None  # the old key alone does not accept the new key's entries
    assert await new.get("k") == {"v": 2}


async def test_write_behind_streams_follow_the_same_rule(make_cache, redis_url, redis_prefix, tmp_path):
    cache = await make_cache(backend="redis", namespaces={"orders": {"write_policy": "write-behind"}})
    written: list[object] = []

    async def writer(write):
        written.append(write.value)

    await cache.write("o1", {"qty": 1}, namespace="orders")
    marker = tmp_path / "owned"
    client = aioredis.Redis.from_url(redis_url)
    try:
        await client.xadd(f"{redis_prefix}wb:orders", {"k": "o2", "t": "", "p": hostile_pickle(marker)})
        cache.register_writer("orders", writer)
        assert await cache.drain("orders", timeout=10) == 0
        dead = await client.xrange(f"{redis_prefix}wb-dead:orders")
    finally:
        await client.aclose()
    assert written == [{"qty": 1}]
    assert not marker.exists()
    assert len(dead) == 1 and b"pickle" in dead[0][1][b"reason"]


# -- the first-party users of kernel.cache(), end to end over Redis ----------------------------


class ProPlan:
    """Entitlements of the Pro plan for every tenant (API keys included), standing in for the billing plugin."""

    @hookimpl
    def entitlements_for(self, kernel, tenant_id):
        return Entitlements(plan="pro", limits={}, features=frozenset({"api_keys", "webhooks", "ai_insights"}))


async def first_party(kernel_harness, tmp_path, redis_url, redis_prefix, *, billing=True, **cache):
    plugins = {
        "storage": botcriptofy_storage,
        "auth": botcriptofy_auth,
        "cache": botcriptofy_cache,
        "billing": BillingPlugin() if billing else ProPlan(),
    }
    settings = {
        "storage": {"url": f"sqlite+aiosqlite:///{tmp_path / 'app.db'}"},
        "auth": {"argon2_time_cost": 1, "argon2_memory_cost": 1024, "argon2_parallelism": 1},
        "cache": {"backend": "redis", "redis_url": redis_url, "prefix": redis_prefix, "redis_timeout": 2.0, **cache},
    }
    return await kernel_harness(plugins=plugins, settings=settings)


async def entries(redis_url: str, pattern: str) -> dict[bytes, bytes]:
    client = aioredis.Redis.from_url(redis_url)
    try:
        return {key: await client.get(key) async for key in client.scan_iter(match=pattern)}
    finally:
        await client.aclose()


async def test_a_tampered_cached_session_runs_no_code_on_get_me(kernel_harness, tmp_path, redis_url, redis_prefix):
    """The reported attack: a modified cached session entry ran code on the next GET /v1/me."""
    harness = await first_party(kernel_harness, tmp_path, redis_url, redis_prefix)
    client = harness.client
    account = {"email": "ana@example.com", "password": "correct horse battery staple", "name": "Ana", "account_type": "trader"}
    signed_up = await client.post("/v1/auth/signup", json=account)
    assert signed_up.status_code == 201, signed_up.text
    headers = {"Authorization": f"Bearer {signed_up.json()['tokens']['access_token']}"}
    me = await client.get("/v1/me", headers=headers)
    assert me.status_code == 200, me.text
    cached = await entries(redis_url, f"{redis_prefix}v:auth::principal:*")
    assert len(cached) == 1
    marker = tmp_path / "owned"
    await overwrite(redis_url, next(iter(cached)).decode(), hostile_pickle(marker))

    again = await client.get("/v1/me", headers=headers)
    assert again.status_code == 200 and again.json() == me.json()  # read from the database again
    assert not marker.exists()
    assert harness.kernel.cache().stats()["_"]["rejected_entries"] == {"pickle-not-allowed": 1}


@pytest.mark.parametrize("billing", [True, False], ids=["billing-plugin", "pro-entitlements"])
async def test_every_first_party_cache_value_is_json_data(kernel_harness, tmp_path, redis_url, redis_prefix, billing):
    """Sessions, tombstones, API keys, login-failure records and billing plans all go through Redis as JSON."""
    harness = await first_party(kernel_harness, tmp_path, redis_url, redis_prefix, billing=billing)
    client = harness.client
    password = "correct horse battery staple"
    signed_up = await client.post(
        "/v1/auth/signup", json={"email": "bo@example.com", "password": password, "name": "Bo", "account_type": "trader"}
    )
    headers = {"Authorization": f"Bearer {signed_up.json()['tokens']['access_token']}"}
    assert (await client.get("/v1/me", headers=headers)).status_code == 200
    expected = {"principal", "revoked", "unknown-fail"}
    if billing:
        expected.add("plan")
    else:
        await mark_email_verified(harness.kernel, email="bo@example.com", by="test")  # keys need a verified address
        created = await client.post("/v1/auth/api-keys", headers=headers, json={"name": "bot", "scopes": ["trading:read"]})
        assert created.status_code == 201, created.text
        by_key = {"X-API-Key": created.json()["key"]}
        assert (await client.get("/v1/me", headers=by_key)).status_code == 200
        assert (await client.get("/v1/me", headers=by_key)).status_code == 200  # from the cache
        expected.add("apikey")
    wrong = await client.post("/v1/auth/login", json={"email": "nobody@example.com", "password": "wrong password here"})
    assert wrong.status_code == 401
    assert (await client.post("/v1/auth/logout", headers=headers)).status_code in (200, 204)
    assert (await client.get("/v1/me", headers=headers)).status_code == 401  # the tombstone, read back from Redis

    found = await entries(redis_url, f"{redis_prefix}v:*")
    kinds = {key.decode()[len(redis_prefix) + 2 :].split(":")[2] for key in found}
    assert expected <= kinds, kinds
    for key, raw in found.items():
        fmt, _, _, length = HEAD.unpack_from(raw)
        assert fmt == 2, key
        json.loads(raw[HEAD.size + length :])
