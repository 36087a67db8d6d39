"""Middleware hands response headers to the kernel's edge and reads the status from it, without wrapping send."""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse

from botcriptofy import Middleware, Route, add_response_headers, hookimpl, response_status


class HeaderAdder:
    """A plugin whose middleware adds one header and records the status it reads after the response."""

    def __init__(self) -> None:
        self.statuses: list[int | None] = []
        self.wrapped_send = False

    @hookimpl
    def register_routes(self, kernel: Any) -> list[Any]:
        async def created(request: Any) -> JSONResponse:
            return JSONResponse({"ok": True}, status_code=201)

        return [Route("/made", created, methods=("POST",))]

    @hookimpl
    def register_middleware(self, kernel: Any) -> list[Middleware]:
        plugin = self

        class Adder:
            def __init__(self, app: Any) -> None:
                self.app = app

            async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
                if scope["type"] != "http":
                    await self.app(scope, receive, send)
                    return
                assert response_status(scope) == 0  # the edge is there, nothing sent yet
                if not add_response_headers(scope, [(b"x-added", b"yes")]):
                    plugin.wrapped_send = True
                await self.app(scope, receive, send)
                plugin.statuses.append(response_status(scope))

        return [Middleware(Adder)]


async def test_headers_reach_the_response_and_the_status_is_read_after_it(kernel_harness):
    plugin = HeaderAdder()
    harness = await kernel_harness(plugins={"adder": plugin})
    response = await harness.client.post("/made")
    assert response.status_code == 201
    assert response.headers["x-added"] == "yes"
    assert response.headers["x-content-type-options"] == "nosniff"  # the edge's own headers are still there
    missing = await harness.client.get("/nowhere")
    assert missing.status_code == 404 and missing.headers["x-added"] == "yes"
    assert plugin.statuses == [201, 404] and not plugin.wrapped_send


async def test_outside_a_runtime_the_helpers_say_so():
    scope: dict[str, Any] = {"type": "http"}
    assert add_response_headers(scope, [(b"x-added", b"yes")]) is False
    assert response_status(scope) is None
