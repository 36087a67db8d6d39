"""Write-behind: the flusher that moves a namespace's acknowledged writes from its Redis stream to its writer.

Every write-behind namespace has a stream ``<prefix>wb:<namespace>`` and one consumer group,
``flushers``. ``cache.write()`` appends to the stream (atomically with the cache update) and
returns once Redis has the entry: that is the acknowledgement. Every worker that registered a
writer for the namespace is a consumer of the group:

1. it reads new entries (``XREADGROUP ... >``), coalesces them per key (the newest wins, with
   the older entries acknowledged along with it), and calls the writer for each key concurrently;
2. it acknowledges and deletes (``XACK`` + ``XDEL``) an entry only after its writer returned, so
   the stream's length is the backlog and a killed worker loses nothing: entries it never read
   are read by the others, entries it read but did not finish stay pending and are claimed
   (``XPENDING`` + ``XCLAIM``) once idle for ``write_behind_claim_idle`` seconds;
3. it retries a failing write with backoff, and after ``write_behind_max_attempts`` deliveries
   moves it to ``<prefix>wb-dead:<namespace>`` (logged and counted) so one bad write cannot stall
   the namespace.

Durability is Redis's: run the Redis that holds write-behind streams with ``appendonly yes`` and
``appendfsync always`` (or accept up to a second of loss with ``everysec``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable
from time import monotonic
from typing import TYPE_CHECKING, Any

from redis.exceptions import ResponseError

from ._codec import DecodeError
from ._service import PendingWrite, _Unavailable

if TYPE_CHECKING:
    from ._service import CacheService

log = logging.getLogger("botcriptofy.cache")

GROUP = "flushers"
Entry = tuple[bytes, dict[bytes, bytes] | None]


def version_of(entry_id: bytes | str) -> int:
    """A stream entry id (``<ms>-<seq>``) as nanoseconds since the epoch, comparable with ``time.time_ns()``."""
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = text.partition("-")
    return int(ms) * 1_000_000 + int(seq or 0)


class Flusher:
    """One worker's consumer of every write-behind stream it has a writer for."""

    def __init__(self, service: CacheService) -> None:
        self.service = service
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._groups: set[str] = set()
        self._attempts: dict[bytes, int] = {}
        self._own_pending: set[str] = set()
        self._retry_at = 0.0
        self._next_monitor = 0.0
        self._next_reclaim = 0.0
        self._next_cleanup = 0.0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="botcriptofy-cache-write-behind")

    def wake(self) -> None:
        self._wake.set()

    async def stop(self) -> None:
        """Let the current batch finish (its writer calls complete and are acknowledged), then stop."""
        self._stopping.set()
        self._wake.set()
        if self._task is None:
            return
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(self._task, timeout=self.service.settings.write_behind_block + 10.0)

    async def drain(self, namespace: str | None, seconds: float) -> int:
        service = self.service
        names = [namespace] if namespace is not None else sorted(service._writers)
        deadline = monotonic() + seconds
        remaining = 0
        while True:
            self._wake.set()
            if service._redis_up and service._background is not None:
                try:
                    async with service._background.pipeline(transaction=False) as pipe:
                        for name in names:
                            pipe.xlen(service.stream_key(name))
                        remaining = sum(await service._call(pipe.execute()))
                except _Unavailable:
                    remaining = sum(service.stats_registry.namespace(n).wb_backlog for n in names)
            else:
                remaining = sum(service.stats_registry.namespace(n).wb_backlog for n in names)
            if remaining == 0 or monotonic() >= deadline:
                return remaining
            await asyncio.sleep(0.02)

    # -- the loop ---------------------------------------------------------------------------

    async def _run(self) -> None:
        service = self.service
        while not self._stopping.is_set():
            if not service._redis_up:
                await self._wait(service._up_event.wait(), limit=1.0)
                continue
            try:
                await self._iteration()
            except asyncio.CancelledError:
                raise
            except _Unavailable:
                await self._wait(None, limit=0.1)
            except Exception:  # the flusher must outlive any one bad batch
                log.exception("write-behind flusher failed; retrying in 1 s")
                await self._wait(None, limit=1.0)

    async def _wait(self, awaitable: Awaitable[Any] | None, *, limit: float) -> None:
        waiters: list[asyncio.Future[Any]] = [asyncio.ensure_future(self._stopping.wait()), asyncio.ensure_future(self._wake.wait())]
        if awaitable is not None:
            waiters.append(asyncio.ensure_future(awaitable))
        try:
            await asyncio.wait(waiters, timeout=limit, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)
        self._wake.clear()

    async def _iteration(self) -> None:
        service = self.service
        settings = service.settings
        now = monotonic()
        behind = {name for name, ns in settings.namespaces.items() if ns.write_policy == "write-behind"}
        if now >= self._next_monitor:
            await self._monitor(sorted(behind | set(service._writers)))
            self._next_monitor = now + 0.5
        # Flush the write-behind namespaces this worker has a writer for, and any other with a backlog left
        # (its policy was changed live while writes were pending).
        registry = service.stats_registry
        flushing = sorted(name for name in service._writers if name in behind or registry.namespace(name).wb_backlog > 0)
        if not flushing:
            await self._wait(None, limit=0.5)
            return
        await self._ensure_groups(flushing)
        if now >= self._next_reclaim:
            self._next_reclaim = now + max(0.05, settings.write_behind_claim_idle / 4)
            claimed = await self._reclaim(flushing)
            if claimed:
                await self._process(claimed)
                return
        if self._own_pending and now >= self._retry_at:
            retry = sorted(self._own_pending & set(flushing))
            self._own_pending.clear()
            if retry:
                await self._process(await self._read(retry, "0", block=None))
                return
        await self._process(await self._read(flushing, ">", block=int(settings.write_behind_block * 1000)))

    # -- Redis calls ------------------------------------------------------------------------

    async def _ensure_groups(self, names: list[str]) -> None:
        service = self.service
        assert service._background is not None
        for name in names:
            stream = service.stream_key(name)
            if stream in self._groups:
                continue
            try:
                await service._background.xgroup_create(stream, GROUP, id="0", mkstream=True)
            except ResponseError as error:
                if "BUSYGROUP" not in str(error):
                    service._failed(error)
            except Exception as error:
                service._failed(error)
            self._groups.add(stream)

    async def _read(self, names: list[str], position: str, *, block: int | None) -> list[tuple[str, list[Entry]]]:
        service = self.service
        assert service._background is not None
        streams = {service.stream_key(name): position for name in names}
        try:
            response: Any = await service._background.xreadgroup(
                GROUP,
                service.consumer,
                streams,  # type: ignore[arg-type]
                count=service.settings.write_behind_batch,
                block=block,
            )
        except ResponseError as error:
            if "NOGROUP" in str(error):  # Redis lost the group (restarted without persistence): create it again
                self._groups.clear()
                return []
            service._failed(error)
        except Exception as error:
            service._failed(error)
        return [(self._namespace_of(stream), entries) for stream, entries in response or ()]

    async def _reclaim(self, names: list[str]) -> list[tuple[str, list[Entry]]]:
        service = self.service
        assert service._background is not None
        settings = service.settings
        idle_ms = int(settings.write_behind_claim_idle * 1000)
        claimed: list[tuple[str, list[Entry]]] = []
        for name in names:
            stream = service.stream_key(name)
            pending = await service._call(
                service._background.xpending_range(stream, GROUP, min="-", max="+", count=settings.write_behind_batch, idle=idle_ms)
            )
            theirs = [p for p in pending if _text(p["consumer"]) != service.consumer]
            if not theirs:
                continue
            for item in theirs:
                entry_id = _bytes(item["message_id"])
                self._attempts[entry_id] = max(self._attempts.get(entry_id, 0), int(item["times_delivered"]))
            entries = await service._call(
                service._background.xclaim(
                    stream, GROUP, service.consumer, min_idle_time=idle_ms, message_ids=[p["message_id"] for p in theirs]
                )
            )
            if entries:
                log.warning(
                    "took over %d pending write-behind write(s) of namespace %r from stopped worker(s) %s",
                    len(entries),
                    name,
                    ", ".join(sorted({_text(p["consumer"]) for p in theirs})),
                )
                claimed.append((name, list(entries)))
        if monotonic() >= self._next_cleanup:
            self._next_cleanup = monotonic() + 60.0
            await self._forget_idle_consumers(names)
        return claimed

    async def _forget_idle_consumers(self, names: list[str]) -> None:
        """Remove consumers with nothing pending that have been idle for an hour (stopped workers)."""
        service = self.service
        assert service._background is not None
        limit_ms = max(3600.0, service.settings.write_behind_claim_idle * 10) * 1000
        for name in names:
            stream = service.stream_key(name)
            with contextlib.suppress(ResponseError):
                for consumer in await service._background.xinfo_consumers(stream, GROUP):
                    if consumer["pending"] == 0 and consumer["idle"] > limit_ms and _text(consumer["name"]) != service.consumer:
                        await service._background.xgroup_delconsumer(stream, GROUP, consumer["name"])

    async def _monitor(self, names: list[str]) -> None:
        service = self.service
        assert service._background is not None
        if not names:
            return
        enqueued = {name: service.stats_registry.namespace(name).wb_enqueued for name in names}
        async with service._background.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.xlen(service.stream_key(name))
                pipe.xrange(service.stream_key(name), "-", "+", count=1)
            results = await service._call(pipe.execute())
        now_ns = time.time_ns()
        for index, name in enumerate(names):
            stats = service.stats_registry.namespace(name)
            length, first = int(results[2 * index]), results[2 * index + 1]
            if stats.wb_enqueued != enqueued[name]:
                # Writes acknowledged while the read was in flight may be missing from it: never count them out.
                length = max(length, stats.wb_backlog)
            stats.wb_backlog = length
            stats.wb_lag = max(0.0, (now_ns - version_of(first[0][0])) / 1e9) if first else 0.0

    # -- processing ---------------------------------------------------------------------------

    async def _process(self, batch: list[tuple[str, list[Entry]]]) -> None:
        for name, entries in batch:
            if entries:
                await self._process_namespace(name, entries)

    async def _process_namespace(self, name: str, entries: list[Entry]) -> None:
        service = self.service
        writer = service._writers.get(name)
        if writer is None:
            return  # unregistered meanwhile: the entries stay pending and another worker claims them
        stats = service.stats_registry.namespace(name)
        groups: dict[tuple[bytes, bytes], list[Entry]] = {}
        gone: list[bytes] = []
        for entry_id, fields in entries:
            if not fields:
                gone.append(entry_id)  # deleted from the stream by someone else
                continue
            groups.setdefault((fields.get(b"t", b""), fields.get(b"k", b"")), []).append((entry_id, fields))
        max_attempts = service.settings.write_behind_max_attempts

        async def flush(group: list[Entry]) -> list[bytes]:
            ids = [entry_id for entry_id, _ in group]
            attempt = max(self._attempts.get(i, 0) for i in ids) + 1
            last_id, fields = group[-1]
            assert fields is not None
            tenant = fields.get(b"t", b"").decode() or None
            key = fields[b"k"].decode()
            try:
                value = service._codec.decode(fields[b"p"])[0]
            except DecodeError as error:
                service.refused(f"{service.stream_key(name)} {last_id!r}", error)
                kind = "unreadable" if error.reason == "unreadable" else "refused"
                await self._dead_letter(name, group, f"{kind} entry: {error}", attempt)
                return []
            except KeyError as error:
                await self._dead_letter(name, group, f"unreadable entry: no field {error}", attempt)
                return []
            if attempt > max_attempts:
                await self._dead_letter(name, group, "too many failed attempts", attempt - 1)
                return []
            try:
                await writer(PendingWrite(name, key, value, tenant, version_of(last_id), attempt, True))
            except Exception as error:
                for i in ids:
                    self._attempts[i] = attempt
                stats.wb_failures += 1
                log.warning(
                    "write-behind writer of namespace %r failed for key %r (attempt %d of %d): %r", name, key, attempt, max_attempts, error
                )
                raise
            return ids

        results = await asyncio.gather(*(flush(group) for group in groups.values()), return_exceptions=True)
        done = list(gone)
        failed = False
        for result in results:
            if isinstance(result, BaseException):
                if isinstance(result, asyncio.CancelledError):
                    raise result
                failed = True
            else:
                done.extend(result)
        if failed:
            self._own_pending.add(name)
            attempts = max(self._attempts.values(), default=1)
            self._retry_at = monotonic() + min(0.05 * 2**attempts, 5.0)
        if done:
            await self._acknowledge(name, done)
            flushed = len(done) - len(gone)
            stats.wb_flushed += flushed
            stats.wb_backlog = max(0, stats.wb_backlog - len(done))

    async def _acknowledge(self, name: str, ids: list[bytes]) -> None:
        service = self.service
        assert service._background is not None
        stream = service.stream_key(name)
        async with service._background.pipeline(transaction=True) as pipe:
            pipe.xack(stream, GROUP, *ids)
            pipe.xdel(stream, *ids)
            await service._call(pipe.execute())
        for i in ids:
            self._attempts.pop(i, None)

    async def _dead_letter(self, name: str, group: list[Entry], reason: str, attempts: int) -> None:
        service = self.service
        assert service._background is not None
        stats = service.stats_registry.namespace(name)
        async with service._background.pipeline(transaction=True) as pipe:
            for entry_id, fields in group:
                dead: dict[Any, Any] = {**(fields or {}), b"id": entry_id, b"reason": reason.encode(), b"attempts": str(attempts).encode()}
                pipe.xadd(service.dead_key(name), dead)
            await service._call(pipe.execute())
        await self._acknowledge(name, [entry_id for entry_id, _ in group])
        stats.wb_dead += len(group)
        stats.wb_backlog = max(0, stats.wb_backlog - len(group))
        log.error("moved %d write-behind write(s) of namespace %r to %s: %s", len(group), name, service.dead_key(name), reason)

    def _namespace_of(self, stream: bytes | str) -> str:
        return _text(stream)[len(self.service.stream_key("")) :]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()
