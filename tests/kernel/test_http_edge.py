"""The HTTP edge: JSON-only bodies, security headers, CORS, operational endpoints, 503s, client disconnects."""

from __future__ import annotations

import asyncio
import logging

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel
from starlette.responses import JSONResponse

import botcriptofy_observability as observability
from botcriptofy import Actor, Middleware, ProblemError, Route, ServiceUnavailable, hookimpl
from botcriptofy.testing import wait_until


class LoginIn(BaseModel):
    email: str
    password: str


class DependencyDown(Exception):
    """What a driver raises when its server is gone (a stand-in for a plugin's own dependency error)."""


class Site:
    def __init__(self) -> None:
        self.received: list[int] = []

    @hookimpl
    def register_routes(self, kernel):
        async def login(request, body: LoginIn):
            return {"email": body.email}

        async def framed(request):
            return JSONResponse({"ok": True}, headers={"Content-Security-Policy": "frame-ancestors https://partner.test"})

        async def unavailable(request):
            raise ServiceUnavailable("The database is restarting.", retry_after=3, dependency="database")

        async def driver_error(request):
            raise DependencyDown("connection refused")

        async def peer(request):
            return {"port": request.client.port}

        async def upload(request):
            self.received.append(len(await request.body()))
            return {"ok": True}

        return [
            Route("/v1/login", login, methods=["POST"], body=LoginIn),
            Route("/framed", framed),
            Route("/unavailable", unavailable),
            Route("/driver-error", driver_error),
            Route("/peer", peer),
            Route("/upload", upload, methods=["POST"]),
        ]

    @hookimpl
    def translate_error(self, kernel, error):
        if isinstance(error, DependencyDown):
            return ServiceUnavailable("The test dependency is down.", retry_after=2, dependency="testdb")
        return None


class RefusingMiddleware:
    """A middleware (outside the kernel's exception handling) that raises for one path."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"] == "/guarded":
            raise ServiceUnavailable("Redis is unreachable.", dependency="redis")
        if scope["type"] == "http" and scope["path"] == "/guarded-driver":
            raise DependencyDown("redis went away")
        await self.app(scope, receive, send)


class Guard:
    @hookimpl
    def register_middleware(self, kernel):
        return [Middleware(RefusingMiddleware, priority=10)]


class HeaderIdentity:
    @hookimpl
    def actor_from_request(self, kernel, request):
        who = request.headers.get("x-test-user")
        if who is None:
            return None
        permissions = frozenset(request.headers.get("x-test-permissions", "").split(",")) - {""}
        return Actor(id=who, kind="user", permissions=permissions)


def problem(response, status):
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    return response.json()


# -- JSON only ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (b"email=a%40b.test&password=x", "application/x-www-form-urlencoded"),
        (b'{"email": "a@b.test", "password": "x"}', "text/plain"),
        (b"--b\r\nContent-Disposition: form-data; name=email\r\n\r\na\r\n--b--\r\n", "multipart/form-data; boundary=b"),
        (b'{"email": "a@b.test", "password": "x"}', None),
    ],
)
async def test_json_endpoints_refuse_other_content_types_with_415(kernel_harness, content, content_type):
    harness = await kernel_harness(plugins={"site": Site()})
    headers = {"content-type": content_type} if content_type else {}
    body = problem(await harness.client.post("/v1/login", content=content, headers=headers), 415)
    assert "application/json" in body["detail"]


@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8", "application/vnd.bcf+json"])
async def test_json_endpoints_take_json_types(kernel_harness, content_type):
    harness = await kernel_harness(plugins={"site": Site()})
    response = await harness.client.post(
        "/v1/login", content=b'{"email": "a@b.test", "password": "x"}', headers={"content-type": content_type}
    )
    assert response.status_code == 200 and response.json() == {"email": "a@b.test"}


async def test_an_empty_body_without_a_type_is_a_validation_error_not_415(kernel_harness):
    harness = await kernel_harness(plugins={"site": Site()})
    problem(await harness.client.post("/v1/login"), 422)


# -- security headers --------------------------------------------------------------------------


async def test_every_response_carries_the_security_headers(kernel_harness):
    harness = await kernel_harness(plugins={"site": Site()})
    for response in (
        await harness.client.get("/-/health"),
        await harness.client.get("/nowhere"),
        await harness.client.post("/v1/login", json={}),
        await harness.client.get("/unavailable"),
    ):
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["referrer-policy"] == "no-referrer"
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
        assert "strict-transport-security" not in response.headers  # plain HTTP


async def test_hsts_over_tls_or_when_configured(kernel_harness):
    harness = await kernel_harness(plugins={"site": Site()})
    tls = httpx.AsyncClient(transport=httpx.ASGITransport(app=harness.runtime), base_url="https://api.test")
    response = await tls.get("/-/health")
    await tls.aclose()
    assert response.headers["strict-transport-security"] == "max-age=31536000; includeSubDomains"
    always = await kernel_harness(settings={"kernel": {"hsts": "always", "hsts_max_age": 600}})
    assert (await always.client.get("/-/health")).headers["strict-transport-security"] == "max-age=600; includeSubDomains"
    never = await kernel_harness(settings={"kernel": {"hsts": "off"}})
    tls = httpx.AsyncClient(transport=httpx.ASGITransport(app=never.runtime), base_url="https://api.test")
    assert "strict-transport-security" not in (await tls.get("/-/health")).headers
    await tls.aclose()


async def test_a_route_keeps_its_own_policy_header(kernel_harness):
    harness = await kernel_harness(plugins={"site": Site()})
    response = await harness.client.get("/framed")
    assert response.headers.get_list("content-security-policy") == ["frame-ancestors https://partner.test"]
    assert response.headers["x-content-type-options"] == "nosniff"


# -- CORS --------------------------------------------------------------------------------------

PREFLIGHT = {
    "origin": "https://app.example.test",
    "access-control-request-method": "POST",
    "access-control-request-headers": "content-type",
}


async def test_cors_is_off_by_default(kernel_harness):
    harness = await kernel_harness(plugins={"site": Site()})
    preflight = await harness.client.options("/v1/login", headers=PREFLIGHT)
    assert "access-control-allow-origin" not in preflight.headers
    simple = await harness.client.get("/-/health", headers={"origin": "https://app.example.test"})
    assert "access-control-allow-origin" not in simple.headers


async def test_cors_allows_only_the_configured_origins(kernel_harness):
    harness = await kernel_harness(plugins={"site": Site()}, settings={"kernel": {"cors_origins": ["https://app.example.test"]}})
    preflight = await harness.client.options("/v1/login", headers=PREFLIGHT)
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "https://app.example.test"
    assert "content-type" in preflight.headers["access-control-allow-headers"].lower()
    simple = await harness.client.get("/-/health", headers={"origin": "https://app.example.test"})
    assert simple.headers["access-control-allow-origin"] == "https://app.example.test"
    assert "Retry-After" in simple.headers["access-control-expose-headers"]
    other = await harness.client.options("/v1/login", headers={**PREFLIGHT, "origin": "https://evil.test"})
    assert other.status_code == 400 and "access-control-allow-origin" not in other.headers


# -- operational endpoints ---------------------------------------------------------------------


async def test_operational_endpoints_are_public_by_default(kernel_harness):
    harness = await kernel_harness(plugins={"observability": observability})
    assert (await harness.client.get("/metrics")).status_code == 200
    assert (await harness.client.get("/-/plugins")).status_code == 200
    assert "checks" in (await harness.client.get("/-/ready")).json()


async def test_a_token_restricts_metrics_plugins_and_ready_details(kernel_harness):
    settings = {"kernel": {"operations_access": ["token"], "operations_token": "s3cret-ops-token"}}
    harness = await kernel_harness(plugins={"observability": observability}, settings=settings)
    client = harness.client
    problem(await client.get("/metrics"), 403)
    problem(await client.get("/-/plugins"), 403)
    problem(await client.get("/-/plugins", headers={"x-operations-token": "wrong"}), 403)
    ready = await client.get("/-/ready")
    assert ready.status_code == 200 and ready.json() == {"status": "ok"}  # load balancers keep their verdict
    assert (await client.get("/-/health")).json() == {"status": "ok"}
    assert (await client.get("/metrics", headers={"authorization": "Bearer s3cret-ops-token"})).status_code == 200
    assert (await client.get("/-/plugins", headers={"x-operations-token": "s3cret-ops-token"})).status_code == 200
    detailed = await client.get("/-/ready", headers={"x-operations-token": "s3cret-ops-token"})
    assert "checks" in detailed.json()


async def test_a_restricted_ready_still_answers_503_when_a_check_fails(kernel_harness):
    from botcriptofy import HealthCheck

    class Down:
        @hookimpl
        def health_checks(self, kernel):
            def fail():
                raise ConnectionError("down")

            return [HealthCheck("db", fail)]

    harness = await kernel_harness(plugins={"down": Down()}, settings={"kernel": {"operations_access": ["permission"]}})
    response = await harness.client.get("/-/ready")
    assert response.status_code == 503 and response.json() == {"status": "unavailable"}


async def test_operational_endpoints_by_staff_permission(kernel_harness):
    harness = await kernel_harness(
        plugins={"identity": HeaderIdentity(), "observability": observability}, settings={"kernel": {"operations_access": ["permission"]}}
    )
    problem(await harness.client.get("/-/plugins"), 403)
    problem(await harness.client.get("/-/plugins", headers={"x-test-user": "u1"}), 403)
    staff = {"x-test-user": "u2", "x-test-permissions": "configuration:read"}
    assert (await harness.client.get("/-/plugins", headers=staff)).status_code == 200
    assert (await harness.client.get("/metrics", headers=staff)).status_code == 200


async def test_operational_endpoints_from_loopback(live_server):
    server = await live_server(settings={"kernel": {"operations_access": ["loopback"]}})
    async with httpx.AsyncClient(base_url=server.url) as client:
        assert (await client.get("/-/plugins")).status_code == 200
    restricted = await live_server(settings={"kernel": {"operations_access": ["token"], "operations_token": "t"}})
    async with httpx.AsyncClient(base_url=restricted.url) as client:
        assert (await client.get("/-/plugins")).status_code == 403


# -- 503 ---------------------------------------------------------------------------------------


def unavailable_count(text: str, dependency: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "botcriptofy_http_unavailable_total" and sample.labels.get("dependency") == dependency:
                return sample.value
    return 0.0


async def test_service_unavailable_is_a_503_problem_with_retry_after_and_is_counted(kernel_harness):
    harness = await kernel_harness(plugins={"site": Site(), "guard": Guard(), "observability": observability})
    body = problem(await harness.client.get("/unavailable"), 503)
    assert body["dependency"] == "database"
    translated = await harness.client.get("/driver-error")
    assert problem(translated, 503)["dependency"] == "testdb" and translated.headers["retry-after"] == "2"
    from_middleware = await harness.client.get("/guarded")
    assert problem(from_middleware, 503)["dependency"] == "redis" and from_middleware.headers["retry-after"] == "1"
    translated_in_middleware = await harness.client.get("/guarded-driver")
    assert problem(translated_in_middleware, 503)["dependency"] == "testdb"
    exposition = (await harness.client.get("/metrics")).text
    assert unavailable_count(exposition, "database") == 1
    assert unavailable_count(exposition, "testdb") == 2
    assert unavailable_count(exposition, "redis") == 1


async def test_a_503_keeps_the_connection_usable(live_server, caplog):
    server = await live_server(plugins={"site": Site(), "guard": Guard()})
    async with httpx.AsyncClient(base_url=server.url) as client:
        first = (await client.get("/peer")).json()["port"]
        for path in ("/unavailable", "/driver-error", "/guarded", "/guarded-driver"):
            response = await client.get(path)
            assert response.status_code == 503 and "retry-after" in response.headers
            assert response.headers.get("connection") != "close"
        assert (await client.get("/peer")).json()["port"] == first  # the same keep-alive connection
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


# -- client disconnects ------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/login", "/upload"])
async def test_a_client_that_leaves_mid_body_is_logged_at_info_not_as_a_500(live_server, caplog, path):
    caplog.set_level(logging.INFO)
    site = Site()
    server = await live_server(plugins={"site": site})
    _reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(
        f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n".encode()
        + b'{"email": "a@b.te'
    )
    await writer.drain()
    await asyncio.sleep(0.05)
    writer.close()
    await writer.wait_closed()
    await wait_until(lambda: any("client disconnected" in r.getMessage() for r in caplog.records))
    disconnects = [r for r in caplog.records if "client disconnected" in r.getMessage()]
    assert disconnects[0].levelno == logging.INFO and disconnects[0].name == "botcriptofy.http"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], [r.getMessage() for r in caplog.records]
    assert site.received == []
    async with httpx.AsyncClient(base_url=server.url) as client:
        assert (await client.get("/-/health")).status_code == 200


async def test_problems_raised_by_plugins_keep_their_status(kernel_harness):
    class Teapot:
        @hookimpl
        def register_routes(self, kernel):
            async def teapot(request):
                raise ProblemError(418, "I'm a teapot")

            return [Route("/teapot", teapot)]

    harness = await kernel_harness(plugins={"teapot": Teapot()})
    problem(await harness.client.get("/teapot"), 418)


async def test_concurrent_readiness_probes_share_one_run_of_the_checks(kernel_harness):
    """/-/ready is not rate-limited and each run reaches the dependencies: probes arriving during a run share it,
    and a probe after it ends runs the checks again (no result outlives its run)."""
    from botcriptofy import HealthCheck

    runs: list[int] = []
    gate = asyncio.Event()

    class Slow:
        @hookimpl
        def health_checks(self, kernel):
            async def database():
                runs.append(1)
                await gate.wait()
                return True

            return [HealthCheck("db", database)]

    harness = await kernel_harness(plugins={"slow": Slow()})
    probes = [asyncio.create_task(harness.client.get("/-/ready")) for _ in range(25)]
    await wait_until(lambda: runs)
    await asyncio.sleep(0.05)  # every probe has arrived and waits for the run in progress
    gate.set()
    answers = await asyncio.gather(*probes)
    assert [a.status_code for a in answers] == [200] * 25 and len(runs) == 1
    assert answers[0].json()["checks"]["slow.db"]["status"] == "ok"
    assert (await harness.client.get("/-/ready")).status_code == 200 and len(runs) == 2
