"""A caller the identity plugin already knows is limited in one backend call; any other passes the flood guard first."""

from __future__ import annotations

from typing import Any

import botcriptofy_ratelimit
from botcriptofy import Actor, hookimpl

from .conftest import Identity

SLOW = 1  # one token a minute: nothing refills while a test runs


class RememberingIdentity(Identity):
    """The test identity plugin, which also answers ``cached_actor`` for tenants it resolved before."""

    def __init__(self) -> None:
        super().__init__()
        self.known: set[str] = set()
        self.cached_calls = 0

    @hookimpl
    def actor_from_request(self, kernel: Any, request: Any) -> Actor | None:
        actor = super().actor_from_request(kernel, request)
        if actor is not None and actor.tenant_id is not None:
            self.known.add(actor.tenant_id)
        return actor

    @hookimpl
    def cached_actor(self, kernel: Any, request: Any) -> Actor | None:
        self.cached_calls += 1
        tenant = request.headers.get("x-tenant")
        if tenant is None or tenant not in self.known:
            return None
        return Actor(id=f"user-{tenant}", kind="user", tenant_id=tenant)


def count_backend_calls(harness: Any) -> list[list[str]]:
    """Record the check names of every backend call the middleware makes from now on."""
    state = harness.kernel.stash[botcriptofy_ratelimit.STATE]
    calls: list[list[str]] = []
    if state.backend.name == "memory":  # the middleware calls the in-process store directly
        store = state.backend.store
        original_store_hit = store.hit

        def store_hit(checks: Any, params: Any) -> Any:
            calls.append([check.name for check in checks])
            return original_store_hit(checks, params)

        store.hit = store_hit
        return calls
    original = state.backend.hit

    async def hit(checks: Any, params: Any) -> Any:
        calls.append([check.name for check in checks])
        return await original(checks, params)

    state.backend.hit = hit
    return calls


async def test_a_known_caller_costs_one_backend_call_with_the_flood_guard_in_it(backend, limited):
    identity = RememberingIdentity()
    harness = await limited(backend, plugins={"identity": identity}, flood_guard={"rate_per_minute": 600, "burst": 100})
    calls = count_backend_calls(harness)

    first = await harness.client.get("/v1/thing", headers={"x-tenant": "t1"})
    assert first.status_code == 200
    assert calls == [["flood_guard"], ["plan", "quota"]]  # unknown: the flood guard first, then identity and the plan
    assert identity.calls == 1

    calls.clear()
    for _ in range(3):
        assert (await harness.client.get("/v1/thing", headers={"x-tenant": "t1"})).status_code == 200
    assert calls == [["flood_guard", "plan", "quota"]] * 3  # known: one call, all or nothing
    assert identity.calls == 1  # actor_from_request was not called again

    calls.clear()
    assert (await harness.client.get("/v1/thing")).status_code == 200  # anonymous: flood guard first
    assert calls == [["flood_guard"], ["plan"]]


async def test_a_known_caller_from_a_flooding_address_is_refused_by_the_flood_guard(backend, limited):
    identity = RememberingIdentity()
    harness = await limited(backend, plugins={"identity": identity}, flood_guard={"rate_per_minute": SLOW, "burst": 3})
    responses = [await harness.client.get("/v1/thing", headers={"x-tenant": "t2"}) for _ in range(6)]
    assert [r.status_code for r in responses] == [200, 200, 200, 429, 429, 429]
    assert identity.calls == 1  # resolved once; every later request was known
    body = responses[-1].json()
    assert body["rate_limit"] == "flood_guard" and "bursts of 3 per address" in body["detail"]
    assert responses[-1].headers["retry-after"]


async def test_unknown_credentials_from_a_flooding_address_never_reach_identity(backend, limited):
    identity = RememberingIdentity()
    harness = await limited(backend, plugins={"identity": identity}, flood_guard={"rate_per_minute": SLOW, "burst": 2})
    responses = [await harness.client.get("/v1/thing", headers={"x-tenant": f"new-{n}"}) for n in range(8)]
    assert [r.status_code for r in responses].count(429) == 6
    assert identity.calls == 2  # only the two admitted requests were resolved
    # The cheap look-up ran before the flood guard (with Redis, an address refused a moment ago is refused
    # from memory before even that).
    assert 3 <= identity.cached_calls <= 8


async def test_a_known_caller_refused_by_its_plan_does_not_consume_the_flood_guard(limited):
    identity = RememberingIdentity()
    harness = await limited(
        "memory",
        plugins={"identity": identity},
        flood_guard={"rate_per_minute": SLOW, "burst": 10},
        plans={"free": {"rate_per_minute": SLOW, "burst": 2, "calls_per_month": 0}},
    )
    responses = [await harness.client.get("/v1/thing", headers={"x-tenant": "t3"}) for _ in range(5)]
    assert [r.status_code for r in responses] == [200, 200, 429, 429, 429]
    assert responses[-1].json()["rate_limit"] == "plan"
    # All or nothing: the three refused requests took no flood token. Of the burst of 10, the two admitted
    # requests and this probe leave 7 (4 if refusals had consumed the flood guard).
    state = harness.kernel.stash[botcriptofy_ratelimit.STATE]
    flood = state.policy.flood_check("127.0.0.1")
    assert flood is not None
    probe = await state.backend.hit([flood], state.policy.penalty)
    assert probe.outcomes[0].remaining == 7


class SharedIdentity(RememberingIdentity):
    """Answers ``cached_actor`` with the very same actor object on every request, as the auth plugin's memo does."""

    def __init__(self) -> None:
        super().__init__()
        self.actors: dict[str, Actor] = {}

    @hookimpl
    def cached_actor(self, kernel: Any, request: Any) -> Actor | None:
        tenant = request.headers.get("x-tenant")
        if tenant is None or tenant not in self.known:
            return None
        return self.actors.setdefault(tenant, Actor(id=f"user-{tenant}", kind="user", tenant_id=tenant))


async def test_a_remembered_callers_compiled_checks_follow_its_plan_and_the_route_cost(backend, limited, plans_plugin):
    """The middleware compiles a remembered caller's subject and checks once; a new plan or another route cost
    compiles them again on the very next request (the same actor object is presented throughout)."""
    from botcriptofy import Entitlements

    plans = plans_plugin({"t1": Entitlements("pro", {"api_rate_per_minute": SLOW, "api_burst": 50, "api_calls_per_month": 0})})
    harness = await limited(
        backend,
        plugins={"identity": SharedIdentity(), "billing": plans},
        entitlements_ttl=0,
        route_costs={"GET /v1/thing": 5},
    )
    tenant = {"x-tenant": "t1"}
    seen = [await harness.client.get("/v1/thing", headers=tenant) for _ in range(3)]
    assert [r.status_code for r in seen] == [200, 200, 200]
    assert [(r.headers["ratelimit-limit"], r.headers["ratelimit-remaining"]) for r in seen] == [("50", "45"), ("50", "40"), ("50", "35")]

    plans.plans["t1"] = Entitlements("enterprise", {"api_rate_per_minute": SLOW, "api_burst": 200, "api_calls_per_month": 0})
    upgraded = await harness.client.get("/v1/thing", headers=tenant)
    assert (upgraded.headers["ratelimit-limit"], upgraded.headers["ratelimit-remaining"]) == ("200", "180")  # 4 requests of 5 tokens used

    cheaper = await harness.client.get("/v1/reports/r1", headers=tenant)  # another route, cost 1, same caller
    assert (cheaper.headers["ratelimit-limit"], cheaper.headers["ratelimit-remaining"]) == ("200", "179")
    again = await harness.client.get("/v1/thing", headers=tenant)
    assert (again.headers["ratelimit-limit"], again.headers["ratelimit-remaining"]) == ("200", "174")
