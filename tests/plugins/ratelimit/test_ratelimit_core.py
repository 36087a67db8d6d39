"""The limiting arithmetic: the Lua script and the in-memory store agree, boundaries are exact, months are calendar months."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

from botcriptofy_ratelimit._backend import RedisBackend
from botcriptofy_ratelimit._core import GCRA, QUOTA, US, Check, MemoryStore, PenaltyParams, interval_of, month_window
from botcriptofy_ratelimit._metrics import Metrics
from botcriptofy_ratelimit._policy import Policy
from botcriptofy_ratelimit._script import SCRIPT
from botcriptofy_ratelimit._settings import RateLimitSettings


class Clock:
    def __init__(self, start: int = 1_700_000_000 * US) -> None:
        self.now = start

    def __call__(self) -> int:
        return self.now


def test_gcra_admits_exactly_the_burst_then_refills_at_the_rate():
    clock = Clock()
    store = MemoryStore(clock)
    check = Check(GCRA, "k", interval_of(7, 60), 5)  # 7 per minute: an interval that is not a whole number of µs
    results = [store.hit([check]).allowed for _ in range(8)]
    assert results == [True] * 5 + [False] * 3
    refused = store.hit([check]).outcomes[0]
    assert refused.retry_after == interval_of(7, 60)
    clock.now += refused.retry_after
    assert store.hit([check]).allowed
    assert not store.hit([check]).allowed


def test_no_drift_after_many_tokens():
    clock = Clock()
    store = MemoryStore(clock)
    check = Check(GCRA, "k", interval_of(3, 1), 3)
    admitted = store.hit([check]).allowed
    for _ in range(30_000):
        clock.now += 1_000  # then one attempt per millisecond for 30 s
        admitted += store.hit([check]).allowed
    assert admitted == 3 + 90  # the burst, then exactly three per second


def test_all_or_nothing_across_checks():
    store = MemoryStore(Clock())
    wide = Check(GCRA, "wide", interval_of(1, 3600), 100)
    narrow = Check(GCRA, "narrow", interval_of(1, 3600), 2)
    for _ in range(2):
        assert store.hit([wide, narrow]).allowed
    verdict = store.hit([wide, narrow])
    assert not verdict.allowed
    assert verdict.outcomes[0].allowed and verdict.outcomes[0].remaining == 97  # what it would have left; nothing taken
    assert store.hit([wide]).outcomes[0].remaining == 97


def test_quota_counts_calls_per_calendar_month():
    clock = Clock(int(datetime(2025, 1, 31, 23, 59, 59, tzinfo=UTC).timestamp()) * US)
    store = MemoryStore(clock)
    quota = Check(QUOTA, "q", 0, 3)
    assert [store.hit([quota]).allowed for _ in range(4)] == [True, True, True, False]
    refused = store.hit([quota]).outcomes[0]
    assert refused.retry_after == 1 * US
    clock.now += 1 * US  # February
    assert store.hit([quota]).outcomes[0].remaining == 2


def test_penalty_tightens_then_decays():
    clock = Clock()
    store = MemoryStore(clock)
    params = PenaltyParams(enabled=True, half_life=10 * US, threshold=5, min_factor=0.1, max_score=100, deny_weight=0)
    check = Check(GCRA, "k", interval_of(60, 60), 40, penalty="p")
    assert store.hit([check], params).outcomes[0].limit == 40
    store.penalize(["p"], 20, params)
    tightened = store.hit([check], params).outcomes[0]
    assert tightened.limit == 10 and tightened.factor == 250
    clock.now += 30 * US  # three half-lives: 20 -> 2.5, under the threshold
    assert store.hit([check], params).outcomes[0].limit == 40


@pytest.mark.parametrize(
    "moment",
    [
        datetime(1970, 1, 1, tzinfo=UTC),
        datetime(2000, 2, 29, 12, tzinfo=UTC),
        datetime(2024, 2, 29, 23, 59, 59, 999_999, tzinfo=UTC),
        datetime(2024, 12, 31, 23, 59, 59, tzinfo=UTC),
        datetime(2025, 1, 1, tzinfo=UTC),
        datetime(2025, 11, 30, 23, 59, 59, tzinfo=UTC),
        datetime(2100, 3, 1, tzinfo=UTC),
    ],
)
async def test_lua_calendar_months_match_python(redis_url, moment):
    client = aioredis.Redis.from_url(redis_url)
    try:
        us = int(moment.timestamp()) * US + moment.microsecond
        month_id, end = await client.eval(SCRIPT, 0, "month", us)
        expected_id, _, expected_end = month_window(us)
        assert (month_id, end) == (expected_id, expected_end)
    finally:
        await client.aclose()


async def test_lua_script_and_memory_store_agree(redis_url, redis_prefix):
    backend = RedisBackend(RateLimitSettings(backend="redis", redis_url=redis_url, key_prefix=redis_prefix), Metrics())
    await backend.start()
    store = MemoryStore()
    params = PenaltyParams(enabled=True, half_life=3600 * US, threshold=3, min_factor=0.25, max_score=100, deny_weight=1)
    plan = Check(GCRA, f"{redis_prefix}plan", interval_of(1, 3600), 6, cost=2, penalty=f"{redis_prefix}pen")
    quota = Check(QUOTA, f"{redis_prefix}quota", 0, 5)
    try:
        for _ in range(8):
            in_redis = await backend.hit([plan, quota], params)
            in_memory = store.hit([plan, quota], params)
            assert in_redis.source == "redis" and in_redis.allowed == in_memory.allowed
            # allowed, limit, remaining, factor, crossed agree; times agree within the test's duration
            assert [(o.allowed, o.limit, o.remaining, o.factor, o.crossed) for o in in_redis.outcomes] == [
                (o.allowed, o.limit, o.remaining, o.factor, o.crossed) for o in in_memory.outcomes
            ]
            for r, m in zip(in_redis.outcomes, in_memory.outcomes, strict=True):
                assert abs(r.reset_after - m.reset_after) < 5 * US
                assert (r.retry_after == -1) == (m.retry_after == -1)
    finally:
        await backend.close()


def test_client_addresses_ipv6_prefix_and_trusted_proxies():
    policy = Policy(RateLimitSettings(trusted_proxies=["10.0.0.0/8"]))
    assert policy.client_ip({"client": ("2001:db8::1", 1)}) == policy.client_ip({"client": ("2001:db8::ffff", 2)}) == "2001:db8::/64"
    assert policy.client_ip({"client": ("2001:db8:0:1::1", 1)}) == "2001:db8:0:1::/64"
    forwarded = {"client": ("10.1.2.3", 1), "headers": [(b"x-forwarded-for", b"198.51.100.7, 203.0.113.1, 10.9.9.9")]}
    assert policy.client_ip(forwarded) == "203.0.113.1"  # the right-most hop that is not a trusted proxy
    spoofed = {"client": ("192.0.2.50", 1), "headers": [(b"x-forwarded-for", b"203.0.113.1")]}
    assert policy.client_ip(spoofed) == "192.0.2.50"
    assert policy.client_ip({}) == "unknown"


def test_route_costs_match_templates_and_methods():
    policy = Policy(RateLimitSettings(route_costs={"post /v1/auth/login": 5, "/v1/reports/{report_id}": 3, "* /v1/x": 2}))
    assert policy.cost_for("POST", "/v1/auth/login") == 5
    assert policy.cost_for("GET", "/v1/auth/login") == 1
    assert policy.cost_for("GET", "/v1/reports/R-17") == 3
    assert policy.cost_for("DELETE", "/v1/X") == 2
    assert policy.cost_for("GET", "/v1/reports/a/b") == 1


async def test_auto_pipeline_keeps_each_reply_with_its_call(redis_url, redis_prefix):
    backend = RedisBackend(RateLimitSettings(backend="redis", redis_url=redis_url, key_prefix=redis_prefix), Metrics())
    try:
        calls = [backend.pipeline.call("INCR", f"{redis_prefix}n") for _ in range(20)]
        calls.insert(7, backend.pipeline.call("EVALSHA", "0" * 40, 0))  # an error reply in the middle of the batch
        results = await asyncio.gather(*calls, return_exceptions=True)
        assert isinstance(results[7], NoScriptError)
        assert [r for i, r in enumerate(results) if i != 7] == list(range(1, 21))
    finally:
        await backend.close()


def test_choose_reports_the_longest_refusal_else_the_closest_to_exhaustion():
    """The outcome shown in the headers: the refusing one that waits longest (NEVER longest of all), else the
    one with the fewest remaining; the first of equals. Checked against the definition over random verdicts."""
    import math
    import random

    from botcriptofy_ratelimit._core import NEVER, Outcome
    from botcriptofy_ratelimit._guard import choose

    def by_definition(outcomes: list[Outcome]) -> int:
        refused = [i for i, o in enumerate(outcomes) if not o.allowed]
        if refused:
            return max(refused, key=lambda i: math.inf if outcomes[i].retry_after == NEVER else outcomes[i].retry_after)
        return min(range(len(outcomes)), key=lambda i: outcomes[i].remaining)

    rng = random.Random(7)
    for _ in range(5_000):
        outcomes = []
        for _ in range(rng.randint(1, 4)):
            allowed = rng.random() < 0.6
            retry = NEVER if allowed or rng.random() < 0.2 else rng.choice([0, 5, 5, 90, 10**6])
            outcomes.append(Outcome(allowed, 10, rng.choice([0, 1, 1, 3, 9]), 1_000, retry))
        assert choose(outcomes) == by_definition(outcomes), outcomes


def test_the_compiled_callers_and_addresses_stay_bounded():
    """The middleware's memo holds each remembered caller's actor: past COMPILED_MAX it starts again empty."""
    from botcriptofy import Actor
    from botcriptofy_ratelimit._backend import MemoryBackend
    from botcriptofy_ratelimit._guard import Guard
    from botcriptofy_ratelimit._middleware import COMPILED_MAX, State

    settings = RateLimitSettings()
    backend = MemoryBackend()
    state = State(Policy(settings), backend, Metrics(), Guard(backend, settings.key_prefix))
    plan = state.policy.plan_named("free")
    actors = [Actor(id=f"u{i}", kind="user", tenant_id=f"t{i}") for i in range(COMPILED_MAX + 5)]
    for i, actor in enumerate(actors):
        subject, checks = state.subject_checks(actor, f"10.0.{i // 250}.{i % 250}", plan, 1)
        assert subject.tenant_id == f"t{i}" and checks[0].key.endswith(f"s:t:t{i}")
        state.flood_check(f"10.0.{i // 250}.{i % 250}")
        assert len(state.compiled) <= COMPILED_MAX and len(state.floods) <= COMPILED_MAX
    assert len(state.compiled) == 5 and len(state.floods) == 5
    assert state.subject_checks(actors[-1], "10.0.0.1", plan, 1)[1] is state.subject_checks(actors[-1], "10.0.0.9", plan, 1)[1]
