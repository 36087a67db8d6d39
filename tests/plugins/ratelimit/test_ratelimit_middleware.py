"""The middleware on a real kernel, with the in-memory backend and with Redis."""

from __future__ import annotations

import asyncio
from importlib.metadata import entry_points
from typing import Any

import botcriptofy_ratelimit
from botcriptofy import Entitlements, EventHandler, RateLimit, RateLimiter, hookimpl
from botcriptofy.testing import wait_until
from botcriptofy_ratelimit import RateLimitMiddleware

HEADERS = ("ratelimit-limit", "ratelimit-remaining", "ratelimit-reset")
SLOW = 1  # one token a minute: nothing refills while a test runs


def limits_of(response: Any) -> tuple[int, int, int]:
    return tuple(int(response.headers[name]) for name in HEADERS)  # type: ignore[return-value]


def statuses(responses: list[Any]) -> dict[int, int]:
    counted: dict[int, int] = {}
    for response in responses:
        counted[response.status_code] = counted.get(response.status_code, 0) + 1
    return counted


class EventSink:
    def __init__(self) -> None:
        self.seen: list[Any] = []

    @hookimpl
    def register_event_handlers(self, kernel: Any) -> list[EventHandler]:
        async def handle(envelope: Any) -> None:
            self.seen.append(envelope)

        return [EventHandler("ratelimit-test-sink", handle, events=("ratelimit.quota_threshold", "ratelimit.subject_penalized"))]


async def test_100_concurrent_requests_at_the_boundary_admit_exactly_the_limit(backend, limited, identity):
    harness = await limited(
        backend,
        plugins={"identity": identity},
        anonymous={"rate_per_minute": SLOW, "burst": 50},
        plans={"pro": {"rate_per_minute": SLOW, "burst": 37}},
    )
    client = harness.client
    anonymous = await asyncio.gather(*(client.get("/v1/thing") for _ in range(100)))
    assert statuses(anonymous) == {200: 50, 429: 50}
    tenant = await asyncio.gather(*(client.get("/v1/thing", headers={"x-tenant": "t1", "x-plan": "pro"}) for _ in range(100)))
    assert statuses(tenant) == {200: 37, 429: 63}
    remaining = sorted(limits_of(r)[1] for r in tenant if r.status_code == 200)
    assert remaining == list(range(37))  # every admitted request saw its own place in the bucket


async def test_every_response_has_headers_and_429_is_problem_json_with_retry_after(backend, limited):
    harness = await limited(backend, anonymous={"rate_per_minute": SLOW, "burst": 3})
    client = harness.client
    responses = [await client.get("/v1/thing"), await client.get("/nowhere"), await client.get("/v1/private")]
    assert [r.status_code for r in responses] == [200, 404, 401]
    assert [limits_of(r)[:2] for r in responses] == [(3, 2), (3, 1), (3, 0)]
    refused = await client.post("/v1/thing")
    assert refused.status_code == 429
    assert refused.headers["content-type"] == "application/problem+json"
    assert limits_of(refused)[:2] == (3, 0)
    assert int(refused.headers["retry-after"]) == 60
    body = refused.json()
    assert body["type"] == "https://botcriptofy.dev/problems/rate-limited"
    assert body["title"] == "Too Many Requests"
    assert body["status"] == 429
    assert body["rate_limit"] == "plan" and body["plan"] == "anonymous"
    assert "1 request per minute with bursts of 3" in body["detail"]
    assert body["retry_after"] == 60


async def test_flood_guard_refuses_before_the_identity_hook_is_called(backend, limited, identity):
    harness = await limited(backend, plugins={"identity": identity}, flood_guard={"rate_per_minute": SLOW, "burst": 5})
    responses = [await harness.client.get("/v1/thing", headers={"x-tenant": "t1"}) for _ in range(20)]
    assert statuses(responses) == {200: 5, 429: 15}
    assert identity.calls == 5  # refused requests never reached authentication
    body = responses[-1].json()
    assert body["rate_limit"] == "flood_guard"
    assert "flood guard allows 1 request per minute with bursts of 5 per address" in body["detail"]
    assert "127.0.0.1" in body["detail"]


async def test_flood_refusals_are_remembered_until_retry_after(limited):
    harness = await limited("redis", flood_guard={"rate_per_minute": 60, "burst": 2})  # a token a second
    state = harness.kernel.stash[botcriptofy_ratelimit.STATE]
    asked: list[str] = []
    hit = state.backend.hit

    async def counting(checks: Any, params: Any) -> Any:
        asked.extend(check.name for check in checks)
        return await hit(checks, params)

    state.backend.hit = counting
    responses = [await harness.client.get("/v1/thing") for _ in range(10)]
    assert statuses(responses[:3]) == {200: 2, 429: 1}
    assert all(r.status_code == 429 and 0 < int(r.headers["retry-after"]) <= 1 for r in responses[3:])
    assert asked.count("flood_guard") < 10  # refusals within Retry-After did not ask Redis
    await asyncio.sleep(int(responses[-1].headers["retry-after"]) + 0.05)
    assert (await harness.client.get("/v1/thing")).status_code == 200


async def test_plan_rate_and_monthly_quota_come_from_entitlements(backend, limited, identity, plans_plugin):
    plans = plans_plugin(
        {
            "t1": Entitlements("pro", {"api_rate_per_minute": SLOW, "api_burst": 3, "api_calls_per_month": 100}),
            "t2": Entitlements("free", {"api_rate_per_minute": 6000, "api_burst": 100, "api_calls_per_month": 5}),
            "t3": Entitlements("enterprise", {"api_rate_per_minute": None, "api_burst": None, "api_calls_per_month": None}),
        }
    )
    sink = EventSink()
    harness = await limited(backend, plugins={"identity": identity, "billing": plans, "sink": sink})
    client = harness.client

    t1 = [await client.get("/v1/thing", headers={"x-tenant": "t1"}) for _ in range(4)]
    assert [r.status_code for r in t1] == [200, 200, 200, 429]
    assert limits_of(t1[0])[:2] == (3, 2)
    assert "the pro plan allows 1 request per minute with bursts of 3; tenant t1 has used them up" in t1[-1].json()["detail"]

    t2 = [await client.get("/v1/thing", headers={"x-tenant": "t2"}) for _ in range(6)]
    assert [r.status_code for r in t2] == [200] * 5 + [429]
    assert [limits_of(r)[:2] for r in t2[:5]] == [(5, 4), (5, 3), (5, 2), (5, 1), (5, 0)]  # the quota is closest to exhaustion
    refused = t2[-1].json()
    assert refused["type"] == "https://botcriptofy.dev/problems/quota-exceeded"
    assert refused["quota"] == "api_calls_per_month" and refused["plan"] == "free"
    assert refused["upgrade_to"] == "pro" and refused["used"] == 5 and refused["limit"] == 5
    assert "The pro plan lifts it." in refused["detail"]
    assert int(t2[-1].headers["retry-after"]) == refused["retry_after"] > 0

    t3 = await asyncio.gather(*(client.get("/v1/thing", headers={"x-tenant": "t3"}) for _ in range(60)))
    assert statuses(t3) == {200: 60}  # unlimited plan: only the flood guard applies

    assert plans.calls == 3  # entitlements are cached per tenant
    thresholds = [(e.payload["tenant_id"], e.payload["percent"]) for e in sink.seen if e.type == "ratelimit.quota_threshold"]
    assert thresholds == [("t2", 80), ("t2", 100)]


async def test_plan_from_settings_when_no_plugin_knows_plans(backend, limited, identity):
    harness = await limited(backend, plugins={"identity": identity}, plans={"pro": {"rate_per_minute": SLOW, "burst": 4}})
    client = harness.client
    pro = [await client.get("/v1/thing", headers={"x-tenant": "a", "x-plan": "pro"}) for _ in range(5)]
    assert [r.status_code for r in pro] == [200] * 4 + [429]
    free = await client.get("/v1/thing", headers={"x-tenant": "b"})
    assert limits_of(free)[:2] == (10, 9)  # the SPEC's free plan: 30 per minute, burst 10
    settings = harness.kernel.settings_for("ratelimit")
    assert settings.plans["pro"].calls_per_month == 100_000  # a plan's other keys keep the SPEC's values
    assert settings.plans["enterprise"].burst == 600


async def test_route_cost(backend, limited):
    harness = await limited(
        backend, anonymous={"rate_per_minute": SLOW, "burst": 10}, route_costs={"GET /v1/reports/{report_id}": 4, "POST /v1/thing": 11}
    )
    client = harness.client
    assert [(await client.get(f"/v1/reports/r{i}")).status_code for i in range(3)] == [200, 200, 429]
    assert (await client.get("/v1/thing")).status_code == 200
    assert limits_of(await client.get("/v1/thing"))[1] == 0
    too_dear = await client.post("/v1/thing")
    assert too_dear.status_code == 429
    assert "costs 11 tokens, more than the burst of 10" in too_dear.json()["detail"]


async def test_penalties_tighten_after_404_bursts_and_decay(backend, limited):
    harness = await limited(
        backend,
        anonymous={"rate_per_minute": 6000, "burst": 100},
        penalty={"threshold": 5, "half_life": 1.0, "weights": {"404": 1}},
    )
    client = harness.client
    assert limits_of(await client.get("/v1/thing"))[0] == 100
    assert statuses([await client.get(f"/missing/{i}") for i in range(20)]) == {404: 20}
    tightened = await client.get("/v1/thing")
    assert tightened.status_code == 200
    assert limits_of(tightened)[0] <= 50  # 100 scaled by threshold/score (score near 20)

    async def relaxed() -> bool:
        return limits_of(await client.get("/v1/thing"))[0] == 100

    waited = await wait_until(relaxed, timeout=10, interval=0.1)
    assert waited > 0.5  # it decays, it does not vanish


async def test_penalty_of_refusals_and_events(limited):
    sink = EventSink()
    harness = await limited(
        "memory",
        plugins={"sink": sink},
        anonymous={"rate_per_minute": SLOW, "burst": 2},
        penalty={"threshold": 3, "half_life": 60, "weights": {"429": 1}},
    )
    responses = [await harness.client.get("/v1/thing") for _ in range(7)]
    assert statuses(responses) == {200: 2, 429: 5}
    assert "tightened to" in responses[-1].json()["detail"]
    assert [e.payload["status"] for e in sink.seen if e.type == "ratelimit.subject_penalized"] == [429]


async def test_live_settings_change_applies_without_restart(limited):
    harness = await limited("memory", anonymous={"rate_per_minute": SLOW, "burst": 2})
    client = harness.client
    backend = harness.kernel.rate_limiter().backend
    assert [(await client.get("/v1/thing")).status_code for _ in range(3)] == [200, 200, 429]
    result = await harness.apply(harness.settings(anonymous={"rate_per_minute": SLOW, "burst": 5}))
    assert result.applied and result.changes["reconfigured"] == ["ratelimit"]
    assert harness.kernel.rate_limiter().backend is backend
    assert [(await client.get("/v1/thing")).status_code for _ in range(4)] == [200, 200, 200, 429]

    changed = harness.settings(anonymous={"rate_per_minute": SLOW, "burst": 5})
    changed["ratelimit"]["redis_timeout"] = 1.0
    result = await harness.apply(changed)
    assert result.changes["restarted"] == ["ratelimit"]
    assert (await client.get("/v1/thing")).status_code == 429  # in-memory counts survive a restart


async def test_backend_switch_and_disable_apply_live(limited):
    harness = await limited("memory", anonymous={"rate_per_minute": SLOW, "burst": 3})
    client = harness.client
    old = harness.kernel.rate_limiter().backend
    assert limits_of(await client.get("/v1/thing"))[1] == 2
    changed = harness.settings(anonymous={"rate_per_minute": SLOW, "burst": 3})
    changed["ratelimit"]["backend"] = "redis"
    result = await harness.apply(changed)
    assert result.changes["restarted"] == ["ratelimit"]
    assert harness.kernel.rate_limiter().backend.name == "redis"
    assert limits_of(await client.get("/v1/thing"))[1] == 2  # counted in Redis from now on
    assert old.name == "memory"

    result = await harness.apply({**changed, "plugins": {"disabled": ["ratelimit"]}})
    assert result.changes["stopped"] == ["ratelimit"]
    response = await client.get("/v1/thing")
    assert response.status_code == 200 and "ratelimit-limit" not in response.headers
    assert harness.kernel.rate_limiter() is None

    result = await harness.apply(changed)
    assert result.changes["started"] == ["ratelimit"]
    assert limits_of(await client.get("/v1/thing"))[1] == 1  # the counts in Redis were kept


async def test_invalid_settings_are_refused_naming_the_key(limited):
    harness = await limited("memory")
    before = harness.kernel
    for section, expected in [
        ({"default_plan": "gold"}, "key 'ratelimit.default_plan'"),
        ({"route_costs": {"FETCH /v1/x": 2}}, "key 'ratelimit.route_costs': Value error, 'fetch /v1/x': 'fetch' is not an HTTP method"),
        ({"backend": "memcached"}, "key 'ratelimit.backend'"),
        ({"plans": {"pro": {"burst": 0}}}, "key 'ratelimit.plans.pro.burst'"),
        ({"trusted_proxies": ["proxy"]}, "'proxy' is not an IP address"),
    ]:
        result = await harness.apply(harness.settings(**section))
        assert not result.applied
        assert expected in result.error
        assert harness.kernel is before


async def test_non_http_scopes_pass_straight_through():
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    middleware = RateLimitMiddleware(app)
    for kind in ("websocket", "lifespan"):
        await middleware({"type": kind}, None, None)  # type: ignore[arg-type]
    assert seen == ["websocket", "lifespan"]


async def test_observe_mode_never_refuses(limited):
    harness = await limited("memory", enforce=False, anonymous={"rate_per_minute": SLOW, "burst": 2})
    responses = [await harness.client.get("/v1/thing") for _ in range(5)]
    assert statuses(responses) == {200: 5}
    assert [limits_of(r)[1] for r in responses] == [1, 0, 0, 0, 0]


async def test_exempt_paths_and_trusted_proxies(limited):
    harness = await limited(
        "memory", exempt_paths=["/-/health"], trusted_proxies=["127.0.0.0/8"], anonymous={"rate_per_minute": SLOW, "burst": 2}
    )
    client = harness.client
    health = [await client.get("/-/health") for _ in range(5)]
    assert statuses(health) == {200: 5} and all("ratelimit-limit" not in r.headers for r in health)
    first = [await client.get("/v1/thing", headers={"x-forwarded-for": "198.51.100.1, 203.0.113.5"}) for _ in range(3)]
    assert [r.status_code for r in first] == [200, 200, 429]
    assert "203.0.113.5" in first[-1].json()["detail"]
    other = await client.get("/v1/thing", headers={"x-forwarded-for": "203.0.113.6"})
    assert other.status_code == 200


async def test_forwarded_for_is_ignored_from_untrusted_peers(limited):
    harness = await limited("memory", anonymous={"rate_per_minute": SLOW, "burst": 2})
    responses = [await harness.client.get("/v1/thing", headers={"x-forwarded-for": f"203.0.113.{i}"}) for i in range(3)]
    assert [r.status_code for r in responses] == [200, 200, 429]


async def test_invalid_credentials_count_as_anonymous(limited, identity):
    harness = await limited("memory", plugins={"identity": identity}, anonymous={"rate_per_minute": SLOW, "burst": 5})
    client = harness.client
    assert (await client.get("/v1/thing", headers={"x-bad": "1"})).status_code == 200
    denied = await client.get("/v1/private", headers={"x-bad": "1"})
    assert denied.status_code == 401
    assert limits_of(denied)[:2] == (5, 3)


async def test_rate_limiter_hook_is_the_login_guard(backend, limited):
    harness = await limited(backend)
    limiter = harness.kernel.rate_limiter()
    assert isinstance(limiter, RateLimiter)
    per_ip = RateLimit("login:ip:203.0.113.9", limit=3, period=60, burst=3)
    per_user = RateLimit("login:user:ana@example.com", limit=2, period=60, burst=2)
    decisions = [await limiter.hit(per_ip, per_user) for _ in range(3)]
    assert [d.allowed for d in decisions] == [True, True, False]
    assert decisions[0].key == per_user.key and decisions[0].remaining == 1
    refused = decisions[-1]
    assert refused.key == per_user.key and 29 < refused.retry_after <= 30
    assert (await limiter.hit(per_ip)).remaining == 0  # the refused hit took nothing from the other limit
    await limiter.reset(per_user.key)
    assert (await limiter.hit(per_user)).allowed


async def test_metrics_and_readiness(limited):
    harness = await limited("redis")
    client = harness.client
    await client.get("/v1/thing")
    await client.get("/v1/thing")
    ready = (await client.get("/-/ready")).json()  # a probe: not limited, not counted
    assert ready["checks"]["ratelimit.redis"]["status"] == "ok"
    registry = harness.kernel.metrics
    assert registry.get_sample_value("botcriptofy_ratelimit_requests_total", {"result": "allowed", "limit": ""}) == 2
    assert registry.get_sample_value("botcriptofy_ratelimit_degraded") == 0


def test_plugin_is_found_by_its_entry_point():
    (entry_point,) = [e for e in entry_points(group="botcriptofy") if e.name == "ratelimit"]
    assert entry_point.load() is botcriptofy_ratelimit
    assert entry_point.dist is not None and entry_point.dist.metadata["Name"] == "botcriptofy-ratelimit"
    live = botcriptofy_ratelimit.plugin_settings_schema().live
    assert "backend" not in live and "redis_url" not in live
    assert {"plans", "anonymous", "flood_guard", "route_costs", "penalty", "outage_mode"} <= live
