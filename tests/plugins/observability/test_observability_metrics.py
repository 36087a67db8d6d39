"""The observability plugin's metrics: /metrics, request series and their labels, reloads, disable and enable."""

from __future__ import annotations

import asyncio
import logging

import httpx
from prometheus_client.parser import text_string_to_metric_families
from starlette.routing import Mount
from starlette.routing import Route as StarletteRoute

import botcriptofy_observability as observability
from botcriptofy import ProblemError, Route, hookimpl
from botcriptofy.testing import wait_until

FRESH = {"observability": {"metrics_reuse_seconds": 0}}  # every scrape renders: for tests that scrape back to back


class Items:
    """A test plugin with templated routes, a mount, a failing route and a route that waits to be released."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.entered = asyncio.Event()

    @hookimpl
    def register_routes(self, kernel):
        async def item(request):
            return {"id": request.path_params["id"]}

        async def refused(request):
            raise ProblemError(422, "Refused", "Always refused.")

        async def boom(request):
            raise RuntimeError("boom")

        async def held(request):
            self.entered.set()
            await self.release.wait()
            return {"held": True}

        async def thing(request):
            from starlette.responses import JSONResponse

            return JSONResponse({"tid": request.path_params["tid"]})

        return [
            Route("/v1/items/{id:int}", item),
            Route("/v1/refused", refused),
            Route("/v1/boom", boom),
            Route("/v1/held", held),
            Mount("/v2", routes=[StarletteRoute("/things/{tid}", thing)]),
        ]


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Return ``{sorted label items: value}`` of every sample called ``name``."""
    found: dict[tuple[tuple[str, str], ...], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def series(route: str, method: str, status: str, generation: int) -> tuple[tuple[str, str], ...]:
    return tuple(sorted({"route": route, "method": method, "status": status, "generation": str(generation)}.items()))


async def scrape(client: httpx.AsyncClient) -> str:
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


async def test_requests_are_counted_by_route_template_method_status_class_and_generation(kernel_harness):
    harness = await kernel_harness(plugins={"observability": observability, "items": Items()})
    client = harness.client
    assert (await client.get("/v1/items/1")).status_code == 200
    assert (await client.get("/v1/items/2")).status_code == 200
    assert (await client.get("/v2/things/abc")).status_code == 200
    assert (await client.get("/v1/refused")).status_code == 422
    assert (await client.post("/v1/items/3")).status_code == 405
    assert (await client.get("/no/such/path")).status_code == 404
    assert (await client.request("BREW", "/v1/items/4")).status_code == 405
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=harness.runtime, raise_app_exceptions=False),
                                 base_url="http://testserver") as lenient:
        assert (await lenient.get("/v1/boom")).status_code == 500

    text = await scrape(client)
    counts = samples(text, "http_requests_total")
    assert counts[series("/v1/items/{id}", "GET", "2xx", 1)] == 2
    assert counts[series("/v2/things/{tid}", "GET", "2xx", 1)] == 1
    assert counts[series("/v1/refused", "GET", "4xx", 1)] == 1
    assert counts[series("/v1/items/{id}", "POST", "4xx", 1)] == 1
    assert counts[series("/v1/items/{id}", "OTHER", "4xx", 1)] == 1
    assert counts[series("<unmatched>", "GET", "4xx", 1)] == 1
    assert counts[series("/v1/boom", "GET", "5xx", 1)] == 1
    # Raw paths never become label values.
    assert "/v1/items/1" not in text and "/v2/things/abc" not in text and "/no/such/path" not in text

    histogram = samples(text, "http_request_duration_seconds_count")
    assert histogram[series("/v1/items/{id}", "GET", "2xx", 1)] == 2
    buckets = samples(text, "http_request_duration_seconds_bucket")
    assert buckets[tuple(sorted((*series("/v1/items/{id}", "GET", "2xx", 1), ("le", "+Inf"))))] == 2
    assert any(dict(labels).get("le") == "0.0005" for labels in buckets)


async def test_metrics_expose_every_registered_collector_and_kernel_state(kernel_harness):
    harness = await kernel_harness(plugins={"observability": observability, "items": Items()}, settings=FRESH)
    text = await scrape(harness.client)
    assert samples(text, "botcriptofy_generation") == {(): 1.0}
    enabled = samples(text, "botcriptofy_plugin_enabled")
    assert enabled[(("plugin", "observability"), ("version", "0"))] == 1
    assert enabled[(("plugin", "core"), ("version", harness.kernel.version))] == 1
    assert samples(text, "botcriptofy_config_refused") == {(): 0.0}
    assert "process_resident_memory_bytes" in text
    assert "python_info" in text
    # Another plugin's collectors in kernel.metrics are exposed as well.
    from prometheus_client import Gauge

    gauge = Gauge("items_in_stock", "Items in stock.", registry=harness.kernel.metrics)
    gauge.set(7)
    assert samples(await scrape(harness.client), "items_in_stock") == {(): 7.0}


async def test_openmetrics_is_served_when_asked_for(kernel_harness):
    harness = await kernel_harness(plugins={"observability": observability})
    response = await harness.client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.rstrip().endswith("# EOF")


async def test_generation_label_follows_reloads_and_old_generations_are_pruned(kernel_harness):
    harness = await kernel_harness(plugins={"observability": observability, "items": Items()},
                                   settings={"observability": {"generations_kept": 2}})
    await harness.client.get("/v1/items/1")
    result = await harness.apply({"observability": {"generations_kept": 2, "slow_request_ms": 5000}})
    assert result.applied and result.generation == 2 and result.changes["reconfigured"] == ["observability"]
    await harness.client.get("/v1/items/1")
    counts = samples(await scrape(harness.client), "http_requests_total")
    assert counts[series("/v1/items/{id}", "GET", "2xx", 1)] == 1
    assert counts[series("/v1/items/{id}", "GET", "2xx", 2)] == 1

    for number, slow in ((3, 4000), (4, 3000)):
        result = await harness.apply({"observability": {"generations_kept": 2, "slow_request_ms": slow}})
        assert result.generation == number
        await harness.client.get("/v1/items/1")
    counts = samples(await scrape(harness.client), "http_requests_total")
    generations = {dict(labels)["generation"] for labels in counts}
    assert generations == {"3", "4"}, "the series of generations 1 and 2 are dropped"


async def test_disable_removes_metrics_and_enable_restores_them_without_duplicates(kernel_harness, caplog):
    harness = await kernel_harness(plugins={"observability": observability, "items": Items()})
    await harness.client.get("/v1/items/1")
    assert series("/v1/items/{id}", "GET", "2xx", 1) in samples(await scrape(harness.client), "http_requests_total")

    result = await harness.apply({"plugins": {"disabled": ["observability"]}})
    assert result.changes["stopped"] == ["observability"]
    assert (await harness.client.get("/metrics")).status_code == 404
    from prometheus_client import generate_latest

    await wait_until(lambda: b"http_requests_total" not in generate_latest(harness.kernel.metrics))
    assert b"botcriptofy_generation" not in generate_latest(harness.kernel.metrics)

    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            result = await harness.apply({})
            assert result.changes["started"] == ["observability"]
            assert (await harness.client.get("/v1/items/1")).status_code == 200
            text = await scrape(harness.client)
            result = await harness.apply({"plugins": {"disabled": ["observability"]}})
            assert result.changes["stopped"] == ["observability"]
            await wait_until(lambda: b"http_requests_total" not in generate_latest(harness.kernel.metrics))
        result = await harness.apply({})
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], [r.getMessage() for r in caplog.records]
    text = await scrape(harness.client)
    assert text.count("# HELP http_requests_total ") == 1
    # The same collectors came back: the request served by generation 7, before the last disable, is still counted.
    assert samples(text, "http_requests_total")[series("/v1/items/{id}", "GET", "2xx", 7)] == 1


async def test_reenable_while_the_old_generation_still_drains_keeps_one_registration(kernel_harness, caplog):
    items = Items()
    harness = await kernel_harness(plugins={"observability": observability, "items": items})
    held = asyncio.create_task(harness.client.get("/v1/held"))
    await items.entered.wait()
    with caplog.at_level(logging.WARNING):
        assert (await harness.apply({"plugins": {"disabled": ["observability"]}})).applied
        assert (await harness.client.get("/metrics")).status_code == 404
        assert (await harness.apply({})).changes["started"] == ["observability"]
        await harness.client.get("/v1/items/5")
    items.release.set()
    assert (await held).status_code == 200
    await asyncio.sleep(0.05)  # let generation 1 finish draining and stop what it stops
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], [r.getMessage() for r in caplog.records]
    text = await scrape(harness.client)
    assert text.count("# HELP http_requests_total ") == 1
    counts = samples(text, "http_requests_total")
    assert counts[series("/v1/items/{id}", "GET", "2xx", 3)] == 1
    assert counts[series("/v1/held", "GET", "2xx", 1)] == 1


async def test_invalid_settings_are_refused_with_the_key(kernel_harness):
    harness = await kernel_harness(plugins={"observability": observability})
    result = await harness.apply({"observability": {"log_level": "chatty"}})
    assert not result.applied and "observability.log_level" in result.error
    result = await harness.apply({"observability": {"slow_request_ms": -1}})
    assert not result.applied and "observability.slow_request_ms" in result.error
    assert (await harness.client.get("/metrics")).status_code == 200


async def test_non_http_scopes_pass_through_untouched():
    from botcriptofy_observability._metrics import HttpMetrics

    seen = []

    async def app(scope, receive, send):
        seen.append(scope["type"])

    http = HttpMetrics()
    middleware = observability.RequestMetricsMiddleware(app, http=http, generation=1)
    for kind in ("websocket", "lifespan"):
        await middleware({"type": kind}, None, None)
    assert seen == ["websocket", "lifespan"]
    assert http.generations() == set()


async def test_slow_requests_are_logged_with_their_route_and_the_threshold_is_live(kernel_harness, caplog):
    items = Items()
    items.release.set()
    harness = await kernel_harness(plugins={"observability": observability, "items": items},
                                   settings={"observability": {"slow_request_ms": 0.001}})
    with caplog.at_level(logging.WARNING, logger="botcriptofy.observability"):
        await harness.client.get("/v1/items/9?token=secret")
    slow = [r for r in caplog.records if r.name == "botcriptofy.observability"]
    assert len(slow) == 1
    record = slow[0]
    assert record.route == "/v1/items/{id}" and record.path == "/v1/items/9" and record.status == 200
    assert record.method == "GET" and record.generation == 1 and record.duration_ms >= 0
    assert "secret" not in record.getMessage()

    caplog.clear()
    await harness.apply({"observability": {"slow_request_ms": 0}})
    with caplog.at_level(logging.WARNING, logger="botcriptofy.observability"):
        await harness.client.get("/v1/items/9")
    assert not [r for r in caplog.records if r.name == "botcriptofy.observability"]


async def test_scrapes_share_one_render_within_the_reuse_interval(kernel_harness, monkeypatch):
    """/metrics is public by default and not rate-limited: however many scrape, a worker renders once per interval."""
    from botcriptofy_observability import _endpoint

    renders: list[str] = []
    choose = _endpoint.choose_encoder

    def counting_choose(accept: str):
        encoder, content_type = choose(accept)

        def counting(registry):
            renders.append(content_type)
            return encoder(registry)

        return counting, content_type

    monkeypatch.setattr(_endpoint, "choose_encoder", counting_choose)
    settings = {"observability": {"metrics_reuse_seconds": 0.5}}
    harness = await kernel_harness(plugins={"observability": observability, "items": Items()}, settings=settings)
    client = harness.client
    bodies = [r.text for r in await asyncio.gather(*(client.get("/metrics") for _ in range(20)))]
    assert len(renders) == 1 and len(set(bodies)) == 1  # twenty concurrent scrapes, one render
    assert (await client.get("/v1/items/1")).status_code == 200
    reused = await scrape(client)
    assert reused == bodies[0] and len(renders) == 1  # within the interval: the same render, without the request
    openmetrics = await client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert openmetrics.headers["content-type"].startswith("application/openmetrics-text") and len(renders) == 2
    await asyncio.sleep(0.55)
    fresh = await scrape(client)
    assert len(renders) == 3
    assert samples(fresh, "http_requests_total") != samples(bodies[0], "http_requests_total")  # the request shows now


class Limiter:
    """A middleware that answers 429 before routing, as the rate limiter does (and at its priority)."""

    @hookimpl
    def register_middleware(self, kernel):
        from starlette.responses import JSONResponse

        from botcriptofy import Middleware

        class Refuse:
            def __init__(self, app):
                self.app = app

            async def __call__(self, scope, receive, send):
                if scope["type"] == "http" and scope["path"].startswith("/v1/items/9"):
                    await JSONResponse({"detail": "slow down"}, status_code=429)(scope, receive, send)
                    return
                await self.app(scope, receive, send)

        return [Middleware(Refuse, priority=10)]


async def test_answers_given_before_routing_are_counted_and_timed_as_unrouted(kernel_harness):
    harness = await kernel_harness(plugins={"observability": observability, "items": Items(), "limiter": Limiter()}, settings=FRESH)
    client = harness.client
    assert (await client.get("/v1/items/1")).status_code == 200
    for _ in range(3):
        assert (await client.get("/v1/items/9")).status_code == 429
    assert (await client.get("/no/such/path")).status_code == 404

    text = await scrape(client)
    counts = samples(text, "http_requests_total")
    assert counts[series("/v1/items/{id}", "GET", "2xx", 1)] == 1
    assert counts[series("<unrouted>", "GET", "4xx", 1)] == 3  # refused by a middleware: never reached a route
    assert counts[series("<unmatched>", "GET", "4xx", 1)] == 1  # routed, and no route matched
    assert samples(text, "http_request_duration_seconds_count")[series("<unrouted>", "GET", "4xx", 1)] == 3
