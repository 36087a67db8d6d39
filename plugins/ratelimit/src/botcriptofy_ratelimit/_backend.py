"""Backends: the in-process one, and Redis with its outage handling (local fallback or fail closed)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence
from itertools import islice
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError, NoScriptError, RedisError, ResponseError

from ._core import GCRA, QUOTA, MemoryStore, Outcome, PenaltyParams, Verdict, month_window
from ._metrics import Metrics
from ._script import SCRIPT, SHA
from ._settings import RateLimitSettings

log = logging.getLogger("botcriptofy.ratelimit")

SEEN_MAX = 100_000
FLUSH_BATCH = 500


class AutoPipeline:
    """Sends the commands that concurrent requests issue in the same event-loop turn as one pipeline.

    Each request still gets its own reply (the script runs once per command, atomically); what is
    shared is the connection, the write and the wake-up, which is most of a round trip's CPU cost
    under concurrency. Batches run on connections from the pool, so a slow batch does not hold up
    the next. An error reply fails only its own command; a connection error fails the batch.
    """

    def __init__(self, pool: BlockingConnectionPool) -> None:
        self.pool = pool
        self._queue: list[tuple[tuple[Any, ...], asyncio.Future[Any]]] = []
        self._scheduled = False
        self._running: set[asyncio.Task[None]] = set()

    def call(self, *command: Any) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.append((command, future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return future

    def _flush(self) -> None:
        self._scheduled = False
        batch, self._queue = self._queue, []
        if batch:
            task = asyncio.get_running_loop().create_task(self._run(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _run(self, batch: list[tuple[tuple[Any, ...], asyncio.Future[Any]]]) -> None:
        replies = 0
        try:
            connection = await self.pool.get_connection()
        except BaseException as error:
            _fail(batch, error)
            raise_unless_error(error)
            return
        try:
            packed = connection.pack_commands([command for command, _ in batch])
            try:
                await connection.send_packed_command(packed, check_health=False)
            except (RedisError, OSError):
                await connection.disconnect()
                await connection.send_packed_command(packed, check_health=False)  # once more, on a new socket
            for _, future in batch:
                try:
                    reply: Any = await connection.read_response()
                except ResponseError as error:  # an error reply, read in full: the next reply is intact
                    reply = error
                replies += 1
                if future.done():
                    continue
                if isinstance(reply, ResponseError):
                    future.set_exception(reply)
                else:
                    future.set_result(reply)
        except BaseException as error:
            await connection.disconnect()
            _fail(batch[replies:], error)
            raise_unless_error(error)
        finally:
            await self.pool.release(connection)

    async def close(self) -> None:
        for task in list(self._running):
            task.cancel()
        await asyncio.gather(*self._running, return_exceptions=True)


def _fail(batch: list[tuple[tuple[Any, ...], asyncio.Future[Any]]], error: BaseException) -> None:
    failure = error if isinstance(error, Exception) else ConnectionError(f"the pipeline stopped: {error!r}")
    for _, future in batch:
        if not future.done():
            future.set_exception(failure)


def raise_unless_error(error: BaseException) -> None:
    """Let cancellation and interpreter exits through; ordinary errors were handed to the callers."""
    if not isinstance(error, Exception):
        raise error


def describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


def safe_url(url: str) -> str:
    """The URL without its password (for logs and problem details)."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
    return url


class Unavailable(Exception):
    """Redis is unreachable and ``outage_mode`` is ``closed``: the request must be refused with 503."""


class MemoryBackend:
    """Limits kept in this process (the embedded default)."""

    name = "memory"
    degraded = False

    def __init__(self, store: MemoryStore | None = None) -> None:
        self.store = store or MemoryStore()

    def configure(self, settings: RateLimitSettings) -> None:
        return None

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def hit(self, checks: list[Any], params: PenaltyParams) -> Verdict:
        return self.store.hit(checks, params)

    async def penalize(self, keys: Sequence[str], weight: float, params: PenaltyParams) -> list[bool]:
        return self.store.penalize(keys, weight, params)

    async def delete(self, keys: Sequence[str]) -> None:
        self.store.delete(keys)

    async def ping(self) -> bool:
        return True


class RedisBackend:
    """Limits in Redis, evaluated by one Lua script; a local :class:`MemoryStore` takes over while Redis is down."""

    name = "redis"

    def __init__(self, settings: RateLimitSettings, metrics: Metrics) -> None:
        self.url = safe_url(settings.redis_url)
        self.metrics = metrics
        pool = BlockingConnectionPool.from_url(
            settings.redis_url,
            max_connections=settings.redis_max_connections,
            timeout=settings.redis_timeout,
            socket_timeout=settings.redis_timeout,
            socket_connect_timeout=settings.redis_timeout,
            # One immediate retry replaces a connection that went stale; no back-off: an outage is handled here.
            retry=Retry(NoBackoff(), 1),
        )
        self.client: Redis = Redis.from_pool(pool)
        self.pipeline = AutoPipeline(pool)
        self.fallback = MemoryStore()
        self.fallback.seed = self._seed
        self.fallback.deltas = {}
        self.seen: dict[str, tuple[int, int]] = {}
        self.degraded = False
        self.outage_mode = settings.outage_mode
        self.recovery_interval = settings.recovery_interval
        self._month = (0, 0, 0)
        self._probe: asyncio.Task[None] | None = None
        self._closing = False
        self.configure(settings)

    def configure(self, settings: RateLimitSettings) -> None:
        """Apply the live settings the backend itself reads."""
        self.outage_mode = settings.outage_mode
        self.recovery_interval = settings.recovery_interval
        self.fallback.scale = settings.fallback_scale

    async def start(self) -> None:
        """Load the script once; an unreachable Redis at start-up is an outage like any other, not a failure."""
        try:
            await self.client.script_load(SCRIPT)
        except Exception as error:
            self._lost(error)

    async def close(self) -> None:
        self._closing = True
        if self._probe is not None:
            self._probe.cancel()
            await asyncio.gather(self._probe, return_exceptions=True)
        await self.pipeline.close()
        await self.client.aclose()

    async def ping(self) -> bool:
        return bool(await self.client.ping())

    # -- calls ------------------------------------------------------------------------------

    async def _evalsha(self, keys: Sequence[str], args: Sequence[Any]) -> Any:
        try:
            return await self.pipeline.call("EVALSHA", SHA, len(keys), *keys, *args)
        except NoScriptError:
            # Redis restarted or its scripts were flushed: load the script again and retry once.
            await self.client.script_load(SCRIPT)
            return await self.pipeline.call("EVALSHA", SHA, len(keys), *keys, *args)

    def _local(self) -> MemoryStore:
        if self.outage_mode == "closed":
            raise Unavailable(f"Redis at {self.url} is unreachable and ratelimit.outage_mode is 'closed'")
        return self.fallback

    async def hit(self, checks: list[Any], params: PenaltyParams) -> Verdict:
        if self.degraded:
            return self._fallback_hit(checks, params)
        keys = [check.key for check in checks]
        args = ["hit", params.arg()]
        penalty_index: dict[str, int] = {}
        for check in checks:
            index = 0
            if params.enabled and check.penalty is not None:
                index = penalty_index.get(check.penalty, 0)
                if not index:
                    keys.append(check.penalty)
                    index = penalty_index[check.penalty] = len(keys)
            args.append(f"{check.kind} {check.interval} {check.capacity} {check.cost} {index}")
        # Any exception, not only redis-py's own: a client bug (an AttributeError raised while a
        # connection was checked out, say) is an outage here, never a 500.
        try:
            raw = await self._evalsha(keys, args)
            head, *rows = raw.split(b"|")
            outcomes = []
            for row in rows:
                a, b, c, d, e, f, g = row.split()
                outcomes.append(Outcome(a == b"1", int(b), int(c), int(d), int(e), int(f), g == b"1"))
            allowed, now = head.split()
        except Exception as error:
            self._lost(error)
            return self._fallback_hit(checks, params)
        self._remember(checks, outcomes, int(now))
        return Verdict(allowed == b"1", outcomes, "redis")

    def _fallback_hit(self, checks: list[Any], params: PenaltyParams) -> Verdict:
        verdict = self._local().hit(checks, params)
        verdict.source = "fallback"
        return verdict

    async def penalize(self, keys: Sequence[str], weight: float, params: PenaltyParams) -> list[bool]:
        if not self.degraded:
            try:
                crossed = await self._evalsha(keys, ["pen", params.half_life, repr(params.threshold), repr(params.max_score), repr(weight)])
                return [flag == 1 for flag in crossed]
            except Exception as error:
                self._lost(error)
        if self.outage_mode == "closed":
            return [False for _ in keys]
        return self.fallback.penalize(keys, weight, params)

    async def delete(self, keys: Sequence[str]) -> None:
        self.fallback.delete(keys)
        if keys and not self.degraded:
            try:
                await self.client.delete(*keys)
            except Exception as error:
                self._lost(error)

    # -- quotas across an outage ------------------------------------------------------------

    def _remember(self, checks: Iterable[Any], outcomes: Iterable[Outcome], now: int) -> None:
        """Keep the last quota usage seen in Redis, so a fallback starts from it rather than from zero."""
        month = self._month
        for check, outcome in zip(checks, outcomes, strict=True):
            if check.kind != QUOTA:
                continue
            if not month[1] <= now < month[2]:
                month = self._month = month_window(now)
            if len(self.seen) >= SEEN_MAX:
                for key in list(islice(self.seen, SEEN_MAX // 2)):
                    del self.seen[key]
            used = outcome.limit - outcome.remaining
            known = self.seen.get(check.key)
            if known is None or known[0] != month[0] or known[1] < used:  # replies may arrive out of order
                self.seen[check.key] = (month[0], used)

    def _seed(self, key: str, month_id: int) -> int | None:
        seen = self.seen.get(key)
        return seen[1] if seen is not None and seen[0] == month_id else None

    async def _flush(self, pending: dict[str, tuple[int, int]]) -> None:
        by_month: dict[int, list[tuple[str, int]]] = {}
        for key, (month_id, amount) in pending.items():
            by_month.setdefault(month_id, []).append((key, amount))
        for month_id, items in by_month.items():
            for start in range(0, len(items), FLUSH_BATCH):
                batch = items[start : start + FLUSH_BATCH]
                await self._evalsha([key for key, _ in batch], ["qadd", month_id, *[amount for _, amount in batch]])

    # -- outage and recovery ----------------------------------------------------------------

    def _lost(self, error: BaseException) -> None:
        self.metrics.errors.inc()
        if self.degraded or self._closing:
            return
        self.degraded = True
        self.fallback.clear()
        self.fallback.deltas = {}
        to = "closed" if self.outage_mode == "closed" else "fallback"
        self.metrics.switches.labels(to).inc()
        self.metrics.degraded.set(1)
        if to == "closed":
            log.error(
                "Redis at %s is unreachable (%s); refusing requests with 503 until it is back (outage_mode = 'closed')",
                self.url,
                describe(error),
            )
        else:
            log.warning(
                "Redis at %s is unreachable (%s); limiting with the local fallback limiter until it is back",
                self.url,
                describe(error),
            )
        self._probe = asyncio.get_running_loop().create_task(self._recover(), name="botcriptofy-ratelimit-recover")

    async def _recover(self) -> None:
        while self.degraded and not self._closing:
            await asyncio.sleep(self.recovery_interval)
            try:
                await self.client.connection_pool.disconnect()
                await self.client.script_load(SCRIPT)
            except Exception:  # whatever the client raises, keep probing: this task is the only way back
                continue
            pending = self.fallback.deltas or {}
            self.fallback.deltas = {}
            self.fallback.clear()
            self.degraded = False
            self.metrics.switches.labels("redis").inc()
            self.metrics.degraded.set(0)
            log.warning("Redis at %s is reachable again; rate limits are shared and exact again", self.url)
            try:
                await self._flush(pending)
            except Exception as error:
                log.warning("could not add %d quota count(s) made during the outage to Redis: %s", len(pending), error)


Backend = MemoryBackend | RedisBackend

__all__ = ["GCRA", "QUOTA", "Backend", "MemoryBackend", "RedisBackend", "Unavailable"]
