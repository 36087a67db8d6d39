"""Generations: requests in flight finish on the generation they started on; state moves with the stash."""

from __future__ import annotations

import asyncio

from botcriptofy import Route, StashKey, hookimpl
from botcriptofy.testing import wait_until

POOL = StashKey[dict]("pool")


class Pooled:
    """Opens a 'pool' at startup and closes it at shutdown, like a database plugin."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.entered = asyncio.Event()
        self.closed: list[int] = []

    @hookimpl
    def startup(self, kernel):
        kernel.stash[POOL] = {"generation": kernel.generation, "open": True}

    @hookimpl
    def shutdown(self, kernel):
        pool = kernel.stash[POOL]
        pool["open"] = False
        self.closed.append(pool["generation"])

    @hookimpl
    def register_routes(self, kernel):
        async def slow(request):
            self.entered.set()
            await self.release.wait()
            pool = kernel.stash[POOL]
            return {"generation": kernel.generation, "pool_open": pool["open"]}

        return [Route("/slow", slow)]


async def test_request_in_flight_finishes_on_its_generation_before_plugins_stop(kernel_harness):
    pooled = Pooled()
    harness = await kernel_harness(plugins={"pooled": pooled})
    in_flight = asyncio.create_task(harness.client.get("/slow"))
    await pooled.entered.wait()

    result = await harness.apply({"plugins": {"disabled": ["pooled"]}})
    assert result.applied
    assert (await harness.client.get("/slow")).status_code == 404
    await asyncio.sleep(0.05)
    assert pooled.closed == [], "the plugin stopped while a request still used it"

    pooled.release.set()
    response = await in_flight
    assert response.json() == {"generation": 1, "pool_open": True}
    await wait_until(lambda: pooled.closed == [1])


async def test_slow_request_is_cut_off_by_drain_timeout(kernel_harness):
    pooled = Pooled()
    harness = await kernel_harness(plugins={"pooled": pooled}, settings={"kernel": {"drain_timeout": 0.2}})
    in_flight = asyncio.create_task(harness.client.get("/slow"))
    await pooled.entered.wait()
    await harness.apply({"kernel": {"drain_timeout": 0.2}, "plugins": {"disabled": ["pooled"]}})
    await wait_until(lambda: pooled.closed == [1], timeout=2)
    pooled.release.set()
    assert (await in_flight).json()["pool_open"] is False


async def test_many_swaps_under_concurrent_requests_lose_nothing(kernel_harness):
    class Steady:
        @hookimpl
        def register_routes(self, kernel):
            async def steady(request):
                await asyncio.sleep(0)
                return {"generation": kernel.generation}

            return [Route("/steady", steady)]

    harness = await kernel_harness(plugins={"steady": Steady(), "pooled": Pooled()})
    stop = asyncio.Event()
    statuses: list[int] = []

    async def load():
        while not stop.is_set():
            statuses.append((await harness.client.get("/steady")).status_code)

    workers = [asyncio.create_task(load()) for _ in range(8)]
    for i in range(20):
        await harness.apply({"plugins": {"disabled": ["pooled"] if i % 2 == 0 else []}})
        await asyncio.sleep(0.005)
    stop.set()
    await asyncio.gather(*workers)
    assert len(statuses) > 100 and set(statuses) == {200}
    assert harness.kernel.generation == 21
