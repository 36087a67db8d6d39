"""Declared routes: validation naming the field, problem+json for every client mistake, OpenAPI from the same models."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic import BaseModel, Field

from botcriptofy import Actor, ProblemError, Route, hookimpl, require


class ItemIn(BaseModel):
    name: str = Field(min_length=1, max_length=50)
    quantity: int = Field(ge=1)


class ItemOut(BaseModel):
    id: int
    name: str
    quantity: int


class Paging(BaseModel):
    limit: int = Field(10, ge=1, le=100)


class Shop:
    @hookimpl
    def register_routes(self, kernel):
        async def create(request, body: ItemIn) -> ItemOut:
            return ItemOut(id=1, name=body.name, quantity=body.quantity)

        async def listing(request, query: Paging) -> list[dict]:
            return [{"id": i, "name": f"item {i}", "quantity": 1} for i in range(query.limit)]

        async def refund(request) -> dict:
            actor = await require(request, "billing:refund")
            return {"by": actor.id}

        async def teapot(request):
            raise ProblemError(418, "I'm a teapot", "Short and stout.", type="https://example.test/teapot")

        async def crash(request):
            raise RuntimeError("secret internal detail")

        return [
            Route("/items", create, methods=["POST"], body=ItemIn, response=ItemOut, status_code=201, max_body=2048),
            Route("/items", listing, query=Paging, response=list[ItemOut]),
            Route("/refunds", refund, methods=["POST"], permission="billing:refund"),
            Route("/teapot", teapot),
            Route("/crash", crash),
        ]


class HeaderIdentity:
    @hookimpl
    def actor_from_request(self, kernel, request):
        who = request.headers.get("x-test-user")
        if who is None:
            return None
        permissions = frozenset(request.headers.get("x-test-permissions", "").split(",")) - {""}
        return Actor(id=who, kind="user", tenant_id="t1", permissions=permissions)


@pytest.fixture
async def client(kernel_harness):
    harness = await kernel_harness(plugins={"shop": Shop(), "identity": HeaderIdentity()})
    return harness.client


def assert_problem(response, status):
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == status and body["title"] and body["type"]
    return body


async def test_valid_body_is_validated_and_serialised(client):
    response = await client.post("/items", json={"name": "bot", "quantity": 2})
    assert response.status_code == 201
    assert response.json() == {"id": 1, "name": "bot", "quantity": 2}


async def test_invalid_fields_are_named(client):
    body = assert_problem(await client.post("/items", json={"name": "", "quantity": 0}), 422)
    assert {e["field"] for e in body["errors"]} == {"name", "quantity"}
    assert "name" in body["detail"] and "quantity" in body["detail"]


@pytest.mark.parametrize("payload", [b"{not json", b"", b"[]", b"null", b'"text"', b"\xff\xfe"])
async def test_malformed_bodies_are_4xx(client, payload):
    response = await client.post("/items", content=payload, headers={"content-type": "application/json"})
    assert 400 <= response.status_code < 500
    assert response.headers["content-type"] == "application/problem+json"


async def test_oversized_body_is_413(client):
    assert_problem(await client.post("/items", json={"name": "x" * 5000, "quantity": 1}), 413)


async def test_streamed_oversized_body_without_length_is_413(client):
    async def chunks():
        for _ in range(10):
            yield b"x" * 1000
            await asyncio.sleep(0)

    assert_problem(await client.post("/items", content=chunks()), 413)


async def test_query_is_validated(client):
    assert len((await client.get("/items", params={"limit": 3})).json()) == 3
    body = assert_problem(await client.get("/items", params={"limit": "many"}), 422)
    assert body["errors"][0]["field"] == "limit" and body["errors"][0]["in"] == "query"


async def test_unknown_route_and_method_are_problems(client):
    assert_problem(await client.get("/nowhere"), 404)
    body = assert_problem(await client.delete("/items"), 405)
    assert "GET" in body["detail"]


async def test_permission_is_checked(client):
    assert_problem(await client.post("/refunds"), 401)
    assert_problem(await client.post("/refunds", headers={"x-test-user": "u1"}), 403)
    ok = await client.post("/refunds", headers={"x-test-user": "u1", "x-test-permissions": "billing:refund"})
    assert ok.json() == {"by": "u1"}
    department_wide = await client.post("/refunds", headers={"x-test-user": "u2", "x-test-permissions": "billing:*"})
    assert department_wide.status_code == 200


async def test_problem_error_keeps_its_type(client):
    body = assert_problem(await client.get("/teapot"), 418)
    assert body["type"] == "https://example.test/teapot" and body["detail"] == "Short and stout."


async def test_server_errors_do_not_leak_details(kernel_harness):
    import httpx

    harness = await kernel_harness(plugins={"shop": Shop()})
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=harness.runtime, raise_app_exceptions=False), base_url="http://t")
    response = await client.get("/crash")
    body = assert_problem(response, 500)
    assert "secret" not in response.text and body["title"] == "Internal Server Error"
    await client.aclose()


async def test_openapi_is_generated_from_the_route_models(client):
    document = (await client.get("/openapi.json")).json()
    assert document["openapi"].startswith("3.1")
    post = document["paths"]["/items"]["post"]
    assert post["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ItemIn"}
    assert post["responses"]["201"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ItemOut"}
    assert "422" in post["responses"] and "413" in post["responses"]
    schemas = document["components"]["schemas"]
    assert schemas["ItemIn"]["properties"]["quantity"]["minimum"] == 1
    get = document["paths"]["/items"]["get"]
    assert get["parameters"][0]["name"] == "limit" and get["parameters"][0]["in"] == "query"
    assert document["paths"]["/refunds"]["post"]["security"] == [{"bearer": []}]
    assert "/-/plugins" in document["paths"]


async def test_fixed_paths_are_indexed_and_win_over_parameterised_ones(kernel_harness):
    class Items:
        @hookimpl
        def register_routes(self, kernel):
            async def by_id(request):
                return {"id": request.path_params["item_id"]}

            async def new(request):
                return {"new": True}

            async def replace(request):
                return {"replaced": request.path_params["item_id"]}

            return [
                Route("/things/{item_id}", by_id),
                Route("/things/{item_id}", replace, methods=["PUT"]),
                Route("/things/new", new),
            ]

    harness = await kernel_harness(plugins={"items": Items()})
    assert (await harness.client.get("/things/new")).json() == {"new": True}
    assert (await harness.client.get("/things/42")).json() == {"id": "42"}
    assert (await harness.client.put("/things/new")).json() == {"replaced": "new"}
    assert (await harness.client.head("/-/health")).status_code == 200
    assert (await harness.client.post("/-/health")).status_code == 405


async def test_refused_credentials_are_checked_once_per_request(kernel_harness):
    """A middleware that resolves the caller first (as the rate limiter does) and the route that requires it
    get the same 401; the identity hook (a signature check, in auth) runs once, not once per consumer."""
    from botcriptofy import Middleware, cached_actor, current_actor

    checks: list[str] = []
    seen_by_middleware: list[str] = []

    class StrictIdentity:
        @hookimpl
        def actor_from_request(self, kernel, request):
            token = request.headers.get("authorization")
            if token is None:
                return None
            checks.append(token)
            if token != "Bearer good":
                raise ProblemError(401, "Unauthorized", "The access token's signature does not verify.")
            return Actor(id="u1", kind="user", tenant_id="t1")

        @hookimpl
        def register_middleware(self, kernel):
            class ResolveFirst:
                def __init__(self, app):
                    self.app = app

                async def __call__(self, scope, receive, send):
                    if scope["type"] == "http":
                        from starlette.requests import Request

                        try:
                            await current_actor(Request(scope))
                            seen_by_middleware.append("actor")
                        except ProblemError as error:
                            seen_by_middleware.append(str(error.status))
                        try:
                            await cached_actor(scope)
                        except ProblemError as error:
                            seen_by_middleware.append(f"cached {error.status}")
                    await self.app(scope, receive, send)

            return [Middleware(ResolveFirst, priority=10)]

        @hookimpl
        def register_routes(self, kernel):
            async def mine(request) -> dict:
                return {"id": (await require(request)).id}

            return [Route("/mine", mine)]

    harness = await kernel_harness(plugins={"identity": StrictIdentity()})
    refused = await harness.client.get("/mine", headers={"Authorization": "Bearer forged"})
    assert_problem(refused, 401)
    assert refused.json()["detail"] == "The access token's signature does not verify."
    assert checks == ["Bearer forged"] and seen_by_middleware == ["401", "cached 401"]
    accepted = await harness.client.get("/mine", headers={"Authorization": "Bearer good"})
    assert accepted.status_code == 200 and accepted.json() == {"id": "u1"}
    assert checks == ["Bearer forged", "Bearer good"]


async def test_an_error_after_the_response_started_sends_no_second_response(kernel_harness):
    """The generation's error layers read "started" from the edge: a ProblemError or a crash in a streamed body
    after its start is raised to the server (which closes the connection), never answered with a second start."""
    from starlette.responses import StreamingResponse

    async def late_problem():
        yield b"first"
        raise ProblemError(409, "Conflict", "Too late to say so.")

    async def late_crash():
        yield b"first"
        raise ValueError("secret")

    class Streams:
        @hookimpl
        def register_routes(self, kernel):
            async def problem(request):
                return StreamingResponse(late_problem())

            async def crash(request):
                return StreamingResponse(late_crash())

            return [Route("/late-problem", problem), Route("/late-crash", crash)]

    harness = await kernel_harness(plugins={"streams": Streams()})
    for path, raised in (("/late-problem", RuntimeError), ("/late-crash", ValueError)):
        sent: list[dict[str, Any]] = []
        requested: list[bool] = []

        async def receive(requested: list[bool] = requested) -> dict[str, Any]:
            if requested:  # the client then stays connected
                await asyncio.sleep(60)
            requested.append(True)
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any], sent: list[dict[str, Any]] = sent) -> None:
            sent.append(message)

        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
            "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "", "headers": [(b"host", b"t")],
            "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 80),
        }
        with pytest.raises(raised):
            await harness.runtime(scope, receive, send)
        assert [m["status"] for m in sent if m["type"] == "http.response.start"] == [200], path
        assert sent[1]["body"] == b"first"


async def test_a_plugin_middleware_may_keep_its_inner_app_under_any_name(kernel_harness):
    """The generation's layers are composed, not found by walking ``.app`` attributes through plugins' middleware."""
    from botcriptofy import Middleware

    class Tagging:
        def __init__(self, inner):
            self.inner = inner

        async def __call__(self, scope, receive, send):
            async def tagged(message):
                if message["type"] == "http.response.start":
                    message = {**message, "headers": [*message.get("headers", ()), (b"x-tagged", b"yes")]}
                await send(message)

            await self.inner(scope, receive, tagged)

    class Tags:
        @hookimpl
        def register_middleware(self, kernel):
            return [Middleware(Tagging, priority=150)]

    harness = await kernel_harness(plugins={"shop": Shop(), "tags": Tags()})
    ok = await harness.client.get("/items")
    assert ok.status_code == 200 and ok.headers["x-tagged"] == "yes"
    assert_problem(await harness.client.get("/teapot"), 418)  # the exception layer still answers problems
    assert "x-content-type-options" in ok.headers  # the edge is still the outermost middleware
