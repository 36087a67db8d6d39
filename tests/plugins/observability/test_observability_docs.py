"""``/docs``: the API reference renders the operations of ``/openapi.json`` in headless Chromium, offline."""

from __future__ import annotations

import asyncio
import shutil

from pydantic import BaseModel

import botcriptofy_observability as observability
from botcriptofy import Route, hookimpl


class OrderIn(BaseModel):
    symbol: str
    quantity: float


class Orders:
    @hookimpl
    def register_routes(self, kernel):
        async def place(request, *, body):
            return {"symbol": body.symbol}

        async def listed(request):
            return []

        return [
            Route("/v1/orders", place, methods=["POST"], body=OrderIn, summary="Place an order", tags=["trading"]),
            Route("/v1/orders/open", listed, summary="List open orders", tags=["trading"]),
        ]


async def rendered_dom(url: str, profile) -> str:
    chromium = shutil.which("chromium")
    assert chromium, "chromium is missing: .ci/run installs Debian's chromium package"
    process = await asyncio.create_subprocess_exec(
        chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
        f"--user-data-dir={profile}", "--virtual-time-budget=20000", "--dump-dom", url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(120):
        out, err = await process.communicate()
    assert process.returncode == 0, err.decode(errors="replace")[-2000:]
    return out.decode()


async def test_the_api_reference_renders_every_operation_in_headless_chromium(live_server, tmp_path):
    server = await live_server(plugins={"observability": observability, "orders": Orders()})
    dom = await rendered_dom(f"{server.url}/docs", tmp_path / "profile")
    assert 'class="swagger-ui' in dom
    for path in ("/v1/orders", "/v1/orders/open", "/-/health"):
        assert f'data-path="{path}"' in dom, path
    assert "Place an order" in dom and "List open orders" in dom
    assert "opblock-post" in dom and "opblock-get" in dom


async def test_assets_are_served_from_the_package_and_nothing_else(kernel_harness):
    harness = await kernel_harness(plugins={"observability": observability})
    page = await harness.client.get("/docs")
    assert page.status_code == 200
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert "//" not in page.text.replace("<!doctype", "")  # no absolute URL: no CDN
    script = await harness.client.get("/docs/assets/swagger-ui-bundle.js")
    assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
    assert len(script.content) > 100_000
    refused = await harness.client.get("/docs/assets/..%2F__init__.py")
    assert refused.status_code == 404
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert (await harness.client.get("/docs/assets/index.html")).status_code == 404
    off = await harness.apply({"observability": {"api_docs": False}})
    assert off.applied
    assert (await harness.client.get("/docs")).status_code == 404
