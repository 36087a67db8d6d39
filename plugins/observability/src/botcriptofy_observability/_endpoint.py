"""``GET /metrics``: the Prometheus exposition of ``kernel.metrics`` (every plugin's collectors)."""

from __future__ import annotations

import asyncio

from prometheus_client.exposition import choose_encoder
from starlette.requests import Request
from starlette.responses import Response

from botcriptofy import StashKey, kernel_of

from ._multiprocess import HostRegistry, directory, snapshot_of
from ._readiness import Readiness

READINESS: StashKey[Readiness] = StashKey("observability.readiness")


async def metrics(request: Request) -> Response:
    """Prometheus text exposition (OpenMetrics when the scraper asks for it).

    Under ``botcriptofy serve`` (multiprocess mode) the answer covers every worker of the host.
    """
    encoder, content_type = choose_encoder(request.headers.get("accept", ""))
    kernel = kernel_of(request)
    readiness = kernel.stash.get(READINESS, None)
    if readiness is not None:
        await readiness.refresh(kernel)
    registry = kernel.metrics
    path = directory()
    if path is None:
        return Response(encoder(registry), headers={"Content-Type": content_type})
    # This worker's collectors are read here, on the loop; the other workers' snapshots are read, merged and
    # encoded on a thread (several 0.5 MB JSON files: tens of milliseconds the loop would otherwise stall).
    body = await asyncio.to_thread(encoder, HostRegistry(snapshot_of(registry), path))
    return Response(body, headers={"Content-Type": content_type})
