"""Redis errors of any kind never become a 500: the limiter falls back (or answers 503) and recovers.

Two ways to break Redis: a fault injected where the plugin meets redis-py (an ``AttributeError``
raised while a connection is checked out once escaped as a 500), and a real Redis server made
unavailable (``CLIENT PAUSE``, or killed).
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
import pytest
import redis

from botcriptofy import RateLimit
from botcriptofy.testing import wait_until
from botcriptofy_ratelimit import STATE

from .test_ratelimit_outage import degraded, metric

ODD_ERRORS = [
    AttributeError("'NoneType' object has no attribute 'send_packed_command'"),
    RuntimeError("unexpected state in the connection pool"),
    TypeError("a bug deep in the client"),
]


class Fault:
    """Make the backend's connection pool raise ``error`` whenever a connection is checked out (while ``on``)."""

    def __init__(self, harness: Any, monkeypatch: pytest.MonkeyPatch, error: Exception) -> None:
        self.on = True
        self.calls = 0
        pool = harness.kernel.stash[STATE].backend.client.connection_pool
        original = pool.get_connection

        async def get_connection(*args: Any, **kwargs: Any) -> Any:
            if self.on:
                self.calls += 1
                raise error
            return await original(*args, **kwargs)

        monkeypatch.setattr(pool, "get_connection", get_connection)


@pytest.mark.parametrize("error", ODD_ERRORS, ids=lambda e: type(e).__name__)
async def test_any_exception_from_the_client_falls_back_and_recovers(limited, private_redis, monkeypatch, error):
    harness = await limited("redis", redis_url=private_redis.url, recovery_interval=0.05, anonymous={"rate_per_minute": 1, "burst": 3})
    client = harness.client
    assert (await client.get("/v1/thing")).status_code == 200
    fault = Fault(harness, monkeypatch, error)
    during = [(await client.get("/v1/thing")).status_code for _ in range(5)]
    assert during == [200, 200, 200, 429, 429]  # the local fallback limits: never a 500, never unlimited
    assert degraded(harness) and fault.calls >= 1
    assert metric(harness, "botcriptofy_ratelimit_backend_errors_total") >= 1
    assert metric(harness, "botcriptofy_ratelimit_backend_switches_total", {"to": "fallback"}) == 1
    limiter = harness.kernel.rate_limiter()
    assert (await limiter.hit(RateLimit("login:ip:x", 5, 60, 5))).allowed  # plugins' guards fall back too

    fault.on = False
    await wait_until(lambda: not degraded(harness), timeout=5)  # the probe survived the odd error
    assert metric(harness, "botcriptofy_ratelimit_backend_switches_total", {"to": "redis"}) == 1
    after = await client.get("/v1/thing")  # counted in Redis again: 1 of its 3 was used before the fault
    assert after.status_code == 200 and after.headers["ratelimit-remaining"] == "1"


@pytest.mark.parametrize("error", ODD_ERRORS[:2], ids=lambda e: type(e).__name__)
async def test_any_exception_fails_closed_with_a_503_problem(limited, private_redis, monkeypatch, error):
    harness = await limited("redis", redis_url=private_redis.url, outage_mode="closed", recovery_interval=0.05)
    client = harness.client
    fault = Fault(harness, monkeypatch, error)
    refused = await client.get("/v1/thing")
    assert refused.status_code == 503
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.headers["retry-after"] == "1"
    body = refused.json()
    assert body["type"] == "https://botcriptofy.dev/problems/service-unavailable"
    assert body["dependency"] == "redis" and "outage_mode is 'closed'" in body["detail"]
    assert metric(harness, "botcriptofy_ratelimit_requests_total", {"result": "unavailable", "limit": ""}) == 1
    fault.on = False
    await wait_until(lambda: not degraded(harness), timeout=5)
    assert (await client.get("/v1/thing")).status_code == 200


async def test_a_paused_redis_is_an_outage_not_a_hang_or_a_500(limited, private_redis):
    """CLIENT PAUSE: Redis accepts connections but answers nothing, so every call times out."""
    harness = await limited(
        "redis", redis_url=private_redis.url, recovery_interval=0.05, redis_timeout=0.2, anonymous={"rate_per_minute": 1, "burst": 3}
    )
    client = harness.client
    assert (await client.get("/v1/thing")).status_code == 200
    with redis.Redis.from_url(private_redis.url) as direct:
        direct.execute_command("CLIENT", "PAUSE", 1500, "ALL")
    statuses = [(await client.get("/v1/thing")).status_code for _ in range(6)]
    assert statuses == [200, 200, 200, 429, 429, 429]  # the local fallback starts a fresh bucket of 3; never a 500
    assert degraded(harness)
    # One timeout switched to the fallback; the requests after it did not wait on Redis again.
    assert metric(harness, "botcriptofy_ratelimit_backend_errors_total") == 1
    await wait_until(lambda: not degraded(harness), timeout=10)


async def _exchange(port: int, paths: list[str]) -> list[tuple[int, dict[bytes, bytes], bytes]]:
    """Send ``paths`` one after the other on ONE keep-alive connection; return each (status, headers, body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    connection = h11.Connection(h11.CLIENT)
    answers = []
    try:
        for path in paths:
            writer.write(connection.send(h11.Request(method="GET", target=path, headers=[("Host", "testserver")])))
            writer.write(connection.send(h11.EndOfMessage()))
            await writer.drain()
            status, headers, body = 0, {}, b""
            while True:
                event = connection.next_event()
                if event is h11.NEED_DATA:
                    connection.receive_data(await asyncio.wait_for(reader.read(65536), 5))
                    continue
                if isinstance(event, h11.Response):
                    status, headers = event.status_code, dict(event.headers)
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    break
                elif isinstance(event, h11.ConnectionClosed):
                    raise AssertionError(f"the server closed the connection after {len(answers)} response(s)")
            answers.append((status, headers, body))
            connection.start_next_cycle()
    finally:
        writer.close()
    return answers


async def test_the_client_connection_stays_usable_through_redis_faults(limited, private_redis, monkeypatch, serve):
    """Over a real socket: the faulty requests get a 503 and the same keep-alive connection serves the next ones."""
    harness = await limited("redis", redis_url=private_redis.url, outage_mode="closed", recovery_interval=0.05)
    port = await serve(harness)
    fault = Fault(harness, monkeypatch, AttributeError("'NoneType' object has no attribute 'read_response'"))
    answers = await _exchange(port, ["/v1/thing", "/v1/thing"])
    assert [status for status, _, _ in answers] == [503, 503]
    assert all(headers.get(b"connection") != b"close" and headers[b"retry-after"] == b"1" for _, headers, _ in answers)
    fault.on = False
    await wait_until(lambda: not degraded(harness), timeout=5)
    assert [status for status, _, _ in await _exchange(port, ["/v1/thing", "/-/health"])] == [200, 200]
