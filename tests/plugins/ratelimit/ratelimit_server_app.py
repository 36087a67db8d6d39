"""The app the two-process test serves with uvicorn: a kernel with the ratelimit plugin, a header identity and a route.

``uvicorn --app-dir tests/plugins/ratelimit --factory ratelimit_server_app:make_app`` with the settings
directory in ``RATELIMIT_TEST_SETTINGS``.
"""

from __future__ import annotations

import os
from typing import Any

import botcriptofy_ratelimit
from botcriptofy import Actor, Route, Runtime, hookimpl


class HeaderIdentity:
    @hookimpl
    def actor_from_request(self, kernel: Any, request: Any) -> Actor | None:
        tenant = request.headers.get("x-tenant")
        if tenant is None:
            return None
        return Actor(id=f"user-{tenant}", kind="user", tenant_id=tenant, attributes={"plan": request.headers.get("x-plan", "free")})


class Pid:
    @hookimpl
    def register_routes(self, kernel: Any) -> list[Route]:
        async def pid(request: Any) -> dict[str, int]:
            return {"pid": os.getpid()}

        return [Route("/v1/pid", pid)]


def make_app() -> Runtime:
    plugins = {"ratelimit": botcriptofy_ratelimit, "identity": HeaderIdentity(), "pid": Pid()}
    return Runtime(os.environ["RATELIMIT_TEST_SETTINGS"], env="testing", plugins=plugins, discover=False, watch=False)
