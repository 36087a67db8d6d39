"""``GET /docs``: the interactive API reference (Swagger UI) over ``/openapi.json``, served offline.

The Swagger UI assets come from the ``swagger-ui-py`` package (installed with the plugin), so
the page needs no CDN. Only the bundle's own files are served (no path from the request reaches the
file system), and the page carries a Content-Security-Policy allowing scripts from this origin only.
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response

from botcriptofy import ProblemError, Route

POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self' data:; frame-ancestors 'none'"
)
ASSETS = ("swagger-ui.css", "swagger-ui-bundle.js", "swagger-ui-standalone-preset.js", "favicon-32x32.png", "favicon-16x16.png")
TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".png": "image/png"}

PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>{title} - API reference</title>
  <link rel="stylesheet" href="/docs/assets/swagger-ui.css">
  <link rel="icon" type="image/png" href="/docs/assets/favicon-32x32.png" sizes="32x32">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/docs/assets/swagger-ui-bundle.js"></script>
  <script src="/docs/assets/swagger-ui-standalone-preset.js"></script>
  <script src="/docs/init.js"></script>
</body>
</html>
"""

INIT = """window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
  layout: "StandaloneLayout",
  tryItOutEnabled: false,
  validatorUrl: null
});
"""


def assets_directory() -> Path:
    from importlib.util import find_spec

    spec = find_spec("swagger_ui")
    assert spec is not None and spec.submodule_search_locations, "the swagger-ui-py package is missing"
    return Path(next(iter(spec.submodule_search_locations))) / "static"


async def page(request: Request) -> Response:
    return HTMLResponse(PAGE.format(title="BotCriptoFy"), headers={"content-security-policy": POLICY, "cache-control": "no-cache"})


async def init(request: Request) -> Response:
    return Response(INIT, media_type="text/javascript", headers={"cache-control": "no-cache"})


async def asset(request: Request) -> Response:
    name = request.path_params["name"]
    if name not in ASSETS:
        raise ProblemError(404, "Not Found", f"No API reference asset named {name!r}.")
    suffix = Path(name).suffix
    return FileResponse(assets_directory() / name, media_type=TYPES[suffix], headers={"cache-control": "public, max-age=86400"})


def routes() -> list[Route]:
    return [
        Route("/docs", page, include_in_schema=False),
        Route("/docs/init.js", init, include_in_schema=False),
        Route("/docs/assets/{name}", asset, include_in_schema=False),
    ]
