"""Two kernels (two workers) over one database: logout and revocation take effect at once in both."""

from __future__ import annotations

import pytest

import botcriptofy_auth
import botcriptofy_cache
import botcriptofy_storage
from botcriptofy.testing import wait_until
from botcriptofy_auth._accounts import approve_influencer, mark_email_verified
from botcriptofy_auth._fields import new_key_entry
from botcriptofy_auth._keys import generate_private_key, private_pem
from botcriptofy_auth._secrets import new_pepper
from botcriptofy_auth._state import state_of

from .conftest import FAST_HASH, bearer, login, signup


def shared_secrets() -> dict[str, object]:
    """Workers of one service share their secrets (from env vars or .secrets.toml in production)."""
    return {
        "signing_key": private_pem(generate_private_key("EdDSA")),
        "api_key_pepper": new_pepper(),
        "field_encryption_keys": [new_key_entry("k1")],
    }


async def _pair(kernel_harness, database_url, auth: dict, cache: dict | None):
    plugins = {"storage": botcriptofy_storage, "auth": botcriptofy_auth}
    settings: dict[str, object] = {"storage": {"url": database_url}, "auth": {**FAST_HASH, **auth}}
    if cache is not None:
        plugins["cache"] = botcriptofy_cache
        settings["cache"] = cache
    first = await kernel_harness(plugins=plugins, settings=settings)
    second = await kernel_harness(plugins=plugins, settings=settings)
    return first, second


@pytest.mark.parametrize(("backend", "strict"), [("redis", False), ("two-layer", True), ("two-layer", False)])
async def test_logout_is_effective_at_once_in_every_worker_sharing_redis(
    database_url, kernel_harness, redis_url, redis_prefix, backend, strict
):
    """With the redis backend (or strict_revocation) the very next request on another worker is refused; with the
    two-layer cache's in-process copies, as soon as its pub/sub invalidation arrives (milliseconds)."""
    a, b = await _pair(
        kernel_harness,
        database_url,
        {**shared_secrets(), "strict_revocation": strict},
        {"backend": backend, "redis_url": redis_url, "prefix": redis_prefix},
    )
    assert type(a.kernel.cache()).__module__.startswith("botcriptofy_cache")

    async def refused_on(worker, headers) -> None:
        async def check() -> bool:
            return (await worker.client.get("/v1/me", headers=headers)).status_code == 401

        if backend == "redis" or strict:
            assert await check()
        else:
            await wait_until(check, timeout=5.0, interval=0.005)

    one = (await signup(a.client, "multi@example.com"))["tokens"]
    two = (await login(b.client, "multi@example.com")).json()
    three = (await login(a.client, "multi@example.com")).json()
    for pair in (one, two, three):  # warm both workers' caches with every session
        for worker in (a, b):
            assert (await worker.client.get("/v1/me", headers=bearer(pair["access_token"]))).status_code == 200

    if backend == "two-layer":  # each worker answers these callers from its memo now: the logout must end that too
        assert one["access_token"] in state_of(b.kernel).resolved and one["access_token"] in state_of(a.kernel).resolved
    assert (await a.client.post("/v1/auth/logout", headers=bearer(one["access_token"]))).status_code == 204
    await refused_on(b, bearer(one["access_token"]))
    assert (await b.client.get("/v1/me", headers=bearer(one["access_token"]))).json()["type"].endswith("/session-revoked")

    assert (await b.client.post("/v1/auth/logout-all", headers=bearer(two["access_token"]))).json() == {"revoked": 2}
    for worker in (a, b):
        for pair in (two, three):
            await refused_on(worker, bearer(pair["access_token"]))

    # An API key revoked on one worker stops working on the other.
    signed = await signup(a.client, "keys@example.com", account_type="influencer")
    await approve_influencer(a.kernel, signed["tenant"]["id"], by="test")  # the Internal plan includes API keys
    await mark_email_verified(a.kernel, email="keys@example.com", by="test")
    influencer = signed["tokens"]["access_token"]
    key = (await a.client.post("/v1/auth/api-keys", headers=bearer(influencer), json={"name": "bot", "scopes": ["trading:read"]})).json()
    assert (await b.client.get("/v1/me", headers={"X-API-Key": key["key"]})).status_code == 200
    assert (await a.client.delete(f"/v1/auth/api-keys/{key['id']}", headers=bearer(influencer))).status_code == 204
    await refused_on(b, {"X-API-Key": key["key"]})


async def test_without_a_shared_cache_principal_cache_ttl_zero_keeps_revocation_immediate(database_url, kernel_harness):
    """With the kernel's in-process fallback cache nothing is shared; ``principal_cache_ttl = 0`` makes every
    request check the session in the database instead, so a logout is still seen at once by every worker."""
    a, b = await _pair(kernel_harness, database_url, {**shared_secrets(), "principal_cache_ttl": 0}, None)
    tokens = (await signup(a.client, "nocache@example.com"))["tokens"]
    assert (await b.client.get("/v1/me", headers=bearer(tokens["access_token"]))).status_code == 200
    assert (await a.client.post("/v1/auth/logout", headers=bearer(tokens["access_token"]))).status_code == 204
    assert (await b.client.get("/v1/me", headers=bearer(tokens["access_token"]))).status_code == 401


async def test_workers_with_different_dev_keys_do_not_accept_each_others_tokens(database_url, kernel_harness):
    """The generated development key lives in each state dir: a real deployment must configure auth.signing_key."""
    a, b = await _pair(kernel_harness, database_url, {}, None)
    tokens = (await signup(a.client, "devkey@example.com"))["tokens"]
    response = await b.client.get("/v1/me", headers=bearer(tokens["access_token"]))
    assert response.status_code == 401 and "unknown signing key" in response.json()["detail"]
