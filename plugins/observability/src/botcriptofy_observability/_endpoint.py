"""``GET /metrics``: the Prometheus exposition of ``kernel.metrics`` (every plugin's collectors)."""

from __future__ import annotations

from prometheus_client.exposition import choose_encoder
from starlette.requests import Request
from starlette.responses import Response

from botcriptofy import kernel_of


async def metrics(request: Request) -> Response:
    """Prometheus text exposition (OpenMetrics when the scraper asks for it)."""
    encoder, content_type = choose_encoder(request.headers.get("accept", ""))
    return Response(encoder(kernel_of(request).metrics), headers={"Content-Type": content_type})
