"""register_response_observers: the edge calls each observer after every response, routed or not, with its status and time."""

from __future__ import annotations

import asyncio
import logging

import httpx
from starlette.responses import JSONResponse

from botcriptofy import Middleware, Route, hookimpl


class Refuser:
    """A middleware answering 429 before any route is chosen, as a rate limiter does."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"] == "/v1/limited":
            await JSONResponse({"detail": "slow down"}, status_code=429)(scope, receive, send)
            return
        await self.app(scope, receive, send)


class Watched:
    """Routes, a refusing middleware and an observer that writes down what it is given."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, int, float, str | None, bool]] = []

    @hookimpl
    def register_routes(self, kernel):
        async def ok(request):
            await asyncio.sleep(0.02)
            return {"ok": True}

        async def boom(request):
            raise RuntimeError("boom")

        return [Route("/v1/ok", ok), Route("/v1/boom", boom), Route("/v1/limited", ok)]

    @hookimpl
    def register_middleware(self, kernel):
        return [Middleware(Refuser, priority=10)]

    @hookimpl
    def register_response_observers(self, kernel):
        def observe(scope, status, seconds):
            route = scope.get("route")
            self.seen.append((scope["path"], status, seconds, getattr(route, "path", None), "router" in scope))

        return [observe]


class Broken:
    @hookimpl
    def register_response_observers(self, kernel):
        def observe(scope, status, seconds):
            raise ValueError("this observer is broken")

        return [observe]


async def test_every_response_is_observed_with_its_status_time_and_route(kernel_harness):
    watched = Watched()
    harness = await kernel_harness(plugins={"watched": watched})
    client = harness.client
    assert (await client.get("/v1/ok")).status_code == 200
    assert (await client.get("/v1/limited")).status_code == 429
    assert (await client.get("/nowhere")).status_code == 404
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=harness.runtime, raise_app_exceptions=False), base_url="http://testserver"
    ) as lenient:
        assert (await lenient.get("/v1/boom")).status_code == 500

    by_path = {path: (status, seconds, route, routed) for path, status, seconds, route, routed in watched.seen}
    status, seconds, route, routed = by_path["/v1/ok"]
    assert (status, route, routed) == (200, "/v1/ok", True)
    assert 0.02 <= seconds < 5  # the route's own 20 ms are inside the time observed
    assert by_path["/v1/limited"][0] == 429
    assert by_path["/v1/limited"][2:] == (None, False)  # answered before routing: no route, no router
    assert by_path["/nowhere"][0] == 404
    assert by_path["/nowhere"][2:] == (None, True)  # routed, and no route matched
    assert by_path["/v1/boom"][0] == 0  # no response started: the server-error layer answers 500 outside the edge
    assert by_path["/v1/boom"][2] == "/v1/boom"


async def test_a_failing_observer_is_logged_and_neither_the_response_nor_the_others_suffer(kernel_harness, caplog):
    watched = Watched()
    harness = await kernel_harness(plugins={"broken": Broken(), "watched": watched})
    with caplog.at_level(logging.ERROR, logger="botcriptofy.http"):
        response = await harness.client.get("/v1/ok")
    assert response.status_code == 200
    assert response.json() == {"ok": True}
    assert [entry[:2] for entry in watched.seen] == [("/v1/ok", 200)]
    assert any("response observer" in record.getMessage() and record.exc_info for record in caplog.records)


async def test_an_observer_that_is_not_callable_is_refused_naming_the_plugin(kernel_harness):
    class NotCallable:
        @hookimpl
        def register_response_observers(self, kernel):
            return ["not a function"]

    harness = await kernel_harness(plugins={"odd": NotCallable(), "watched": Watched()})
    assert "odd" not in harness.kernel.plugins and "watched" in harness.kernel.plugins
    reason = harness.runtime.not_ready()["odd"]
    assert "register_response_observers" in reason and "callable" in reason
    assert (await harness.client.get("/v1/ok")).status_code == 200
