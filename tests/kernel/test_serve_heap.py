"""A served worker settles its heap before it reports started: what start-up made is frozen out of the collector's walks."""

from __future__ import annotations

import gc

from botcriptofy._serve import CloseWhenDraining


class _Garbage:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the collector frees it


async def test_the_lifespan_start_collects_then_freezes_before_it_is_reported():
    seen: list[tuple[str, int]] = []
    collected: list[int] = []

    async def app(scope, receive, send):
        assert scope["type"] == "lifespan"
        await receive()
        _Garbage()  # start-up garbage: collected before the freeze, not kept for the worker's life
        await send({"type": "lifespan.startup.complete"})

    async def receive():
        return {"type": "lifespan.startup"}

    async def send(message):
        seen.append((message["type"], gc.get_freeze_count()))
        collected.append(sum(1 for thing in gc.get_objects() if isinstance(thing, _Garbage)))

    gc.unfreeze()
    try:
        assert gc.get_freeze_count() == 0
        await CloseWhenDraining(app, server=None)({"type": "lifespan"}, receive, send)  # type: ignore[arg-type]
        assert seen[0][0] == "lifespan.startup.complete" and seen[0][1] > 1000  # frozen before the worker says it started
        assert collected == [0]  # the cycle was collected first
        assert not any(isinstance(thing, _Garbage) for thing in gc.get_objects())
    finally:
        gc.unfreeze()
