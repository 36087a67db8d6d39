"""``GET /metrics``: the Prometheus exposition of ``kernel.metrics`` (every plugin's collectors)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from prometheus_client.exposition import choose_encoder
from starlette.requests import Request
from starlette.responses import Response

from botcriptofy import Kernel, StashKey, kernel_of

from ._multiprocess import HostRegistry, directory, snapshot_of
from ._readiness import Readiness
from ._settings import ObservabilitySettings

READINESS: StashKey[Readiness] = StashKey("observability.readiness")


class Renders:
    """The last exposition per content type, and the one being rendered.

    A scrape with every plugin costs a worker about 100 ms of CPU (two workers' snapshots merged and
    encoded): twenty scrapes a second kept two workers busy, and ``/metrics`` is public by default and
    not rate-limited. Scrapes arriving while one renders wait for it, and a render younger than
    ``metrics_reuse_seconds`` is answered again, so a worker renders at most once per that interval
    whatever the number of scrapers. A render is reused within its configuration generation only:
    after a reload the next scrape shows the new plugins' collectors.
    """

    def __init__(self) -> None:
        self.last: dict[tuple[int, str], tuple[float, bytes]] = {}
        self.pending: dict[tuple[int, str], asyncio.Future[bytes]] = {}

    async def get(self, key: tuple[int, str], render: Callable[[], Awaitable[bytes]], reuse_seconds: float) -> bytes:
        """The exposition for ``key`` (generation, content type): reused, awaited, or rendered now."""
        last = self.last.get(key)
        if last is not None and time.monotonic() - last[0] < reuse_seconds:
            return last[1]
        pending = self.pending.get(key)
        if pending is None:
            pending = self.pending[key] = asyncio.ensure_future(self._render(key, render))
        # A scraper that disconnects does not cancel the render the others wait for.
        return await asyncio.shield(pending)

    async def _render(self, key: tuple[int, str], render: Callable[[], Awaitable[bytes]]) -> bytes:
        started = time.monotonic()
        try:
            body = await render()
        finally:
            del self.pending[key]
        self.last = {found: value for found, value in self.last.items() if found[0] == key[0]}  # older generations' go
        self.last[key] = (started, body)
        return body


RENDERS: StashKey[Renders] = StashKey("observability.renders")


def _reuse_seconds(kernel: Kernel) -> float:
    settings = kernel.settings_for("observability")
    return settings.metrics_reuse_seconds if isinstance(settings, ObservabilitySettings) else 1.0


async def metrics(request: Request) -> Response:
    """Prometheus text exposition (OpenMetrics when the scraper asks for it).

    Under ``botcriptofy serve`` (multiprocess mode) the answer covers every worker of the host.
    """
    encoder, content_type = choose_encoder(request.headers.get("accept", ""))
    kernel = kernel_of(request)

    async def render() -> bytes:
        readiness = kernel.stash.get(READINESS, None)
        if readiness is not None:
            await readiness.refresh(kernel)
        registry = kernel.metrics
        path = directory()
        if path is None:
            return encoder(registry)  # type: ignore[no-any-return]
        # This worker's collectors are read here, on the loop; the other workers' snapshots are read, merged and
        # encoded on a thread (several 0.5 MB JSON files: tens of milliseconds the loop would otherwise stall).
        return await asyncio.to_thread(encoder, HostRegistry(snapshot_of(registry), path))

    renders = kernel.stash.get(RENDERS, None)
    if renders is None:
        renders = kernel.stash[RENDERS] = Renders()
    body = await renders.get((kernel.generation, content_type), render, _reuse_seconds(kernel))
    return Response(body, headers={"Content-Type": content_type})
