"""The cache service: the object ``kernel.cache()`` returns while the cache plugin is enabled.

Layers. ``memory`` keeps Python objects in a bounded LRU in this process. ``redis`` keeps encoded
entries in Redis only. ``two-layer`` puts the LRU in front of Redis: reads are served from the
process when they can, and every change (set, delete, tag or tenant invalidation) is published
on one Redis channel, in the same atomic script as the change itself, so every other worker drops
its in-process copy within milliseconds.

Redis outages. Any connection error or timeout marks Redis down (logged and counted once); from
then on no request touches Redis: reads are served by the in-process layer and the loaders,
writes go to the in-process layer, and invalidations are remembered. A probe pings Redis every
``reconnect_interval``; when it answers, the worker subscribes again, clears its in-process layer
(it may have missed invalidations), replays the remembered invalidations and switches back.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from time import monotonic, perf_counter
from typing import Any, NoReturn

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from . import _scripts
from ._codec import Codec, DecodeError, NotData, RefusedEntry
from ._memory import MISS, NEVER, MemoryLayer
from ._settings import CacheSettings, NamespaceSettings
from ._stats import NamespaceStats, Stats

log = logging.getLogger("botcriptofy.cache")

TENANT_TAG = "@tenant:"
_DOWN_ERRORS = (RedisConnectionError, RedisTimeoutError, OSError, asyncio.TimeoutError)
_MAX_REMEMBERED = 100_000
REFUSAL_LOG_INTERVAL = 60.0
_TAG_BATCH = 1000
_DEFAULT_NAMESPACE = NamespaceSettings.model_validate({})


@dataclass(frozen=True, slots=True)
class PendingWrite:
    """What a namespace's writer receives: one value to persist in the system of record.

    ``version`` grows with every acknowledged write of the cache (nanoseconds since the epoch: the
    Redis stream entry's time for write-behind, the local clock for synchronous writes). Writers
    must be idempotent (the same write can be delivered twice) and, to keep the newest value when
    writes of one key arrive out of order, should ignore a write older than the stored version.
    """

    namespace: str
    key: str
    value: Any
    tenant_id: str | None
    version: int
    attempt: int = 1
    write_behind: bool = False


Writer = Callable[[PendingWrite], Awaitable[Any]]


class NoWriterError(LookupError):
    """``cache.write()`` needs the namespace's writer in this process and none is registered."""


class _Unavailable(Exception):
    """Redis did not answer this call (it is now marked down, or the error was counted)."""


class _Watch:
    """Invalidations seen while one key was being read from Redis: if any could concern it, no in-process copy is kept."""

    __slots__ = ("dirty", "refs", "tags", "writes")

    def __init__(self) -> None:
        self.refs = 1
        self.dirty = False
        self.tags: set[str] = set()
        self.writes: set[int] = set()

    def allows(self, tags: tuple[str, ...], write_id: int) -> bool:
        """Whether a value read while this watch was on (written by ``write_id``) may be kept in process."""
        if self.dirty or (self.tags and self.tags.intersection(tags)):
            return False
        return not self.writes or self.writes == {write_id}


class Namespace:
    """A namespace's effective settings and its counters."""

    __slots__ = ("jitter", "local", "name", "policy", "stats", "ttl")

    def __init__(self, name: str, stats: NamespaceStats) -> None:
        self.name = name
        self.stats = stats
        self.ttl = 0.0
        self.jitter = 0.0
        self.policy = "write-through"
        self.local = True

    def configure(self, settings: CacheSettings) -> None:
        own = settings.namespaces.get(self.name) or _DEFAULT_NAMESPACE
        self.ttl = settings.default_ttl if own.ttl is None else own.ttl
        self.jitter = settings.ttl_jitter if own.ttl_jitter is None else own.ttl_jitter
        self.policy = own.write_policy
        self.local = own.local


class CacheService:
    """The shared cache. Satisfies :class:`botcriptofy.Cache` and adds:

    - ``get_or_set(key, loader, ...)``: read-through with stampede protection (one loader call per
      cold key: single-flight in the process, a Redis lock across processes);
    - ``invalidate_tenant(tenant_id)``: drop every entry stored with that ``tenant_id``;
    - ``write(key, value, ...)``: write through the namespace's write policy to its writer;
    - ``register_writer(namespace, writer)`` / ``unregister_writer(namespace)``;
    - ``drain(namespace=None, timeout=...)``, ``stats()``, ``redis_available``, ``ping()``.

    Every method takes ``namespace`` (default ``"default"``) and, where an entry is addressed,
    ``tenant_id``: an entry stored with a tenant is a different entry from the same key without one
    or with another tenant, and ``invalidate_tenant`` drops them all. No method raises because Redis
    is down; loaders' and writers' own errors reach the caller.
    """

    def __init__(self, settings: CacheSettings, *, stats: Stats | None = None, writers: dict[str, Writer] | None = None) -> None:
        self.settings = settings
        self.backend = settings.backend
        self.stats_registry = stats if stats is not None else Stats()
        self._writers: dict[str, Writer] = writers if writers is not None else {}
        self._namespaces: dict[str, Namespace] = {}
        self._local: MemoryLayer | None = MemoryLayer(settings.memory_max_entries) if settings.backend != "redis" else None
        self._two_layer = settings.backend == "two-layer"
        self._uses_redis = settings.backend != "memory"
        self._codec = codec_for(settings)
        self._refusals_logged: dict[str, float] = {}
        self._prefix = settings.prefix
        self._channel = settings.prefix + "invalidate"
        self._origin = uuid.uuid4().hex
        self.consumer = f"{socket.gethostname()}:{os.getpid()}:{self._origin[:8]}"
        self._client: Redis | None = None
        self._background: Redis | None = None
        self._redis_up = False
        self._down_since: float | None = None
        self._up_event = asyncio.Event()
        self._watches: dict[str, _Watch] = {}
        self._flights: dict[str, asyncio.Task[tuple[Any, str]]] = {}
        self._remembered_keys: set[str] = set()
        self._remembered_tags: set[str] = set()
        self._remembered_overflow = False
        self._listener: asyncio.Task[None] | None = None
        self._probe: asyncio.Task[None] | None = None
        self._flusher: Any = None
        self._closed = False
        self._scripts: dict[str, Any] = {}

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect to Redis when the backend uses it; an unreachable Redis is an outage, not a failure."""
        if not self._uses_redis:
            return
        timeout = self.settings.redis_timeout
        self._client = Redis.from_url(
            self.settings.redis_url, socket_timeout=timeout, socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 1)
        )
        self._background = Redis.from_url(
            self.settings.redis_url,
            socket_timeout=max(5.0, self.settings.write_behind_block * 4),
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 1),
        )
        for name in ("SET", "WRITE_BEHIND", "GET_OR_LOCK", "RELEASE", "INVALIDATE_TAG"):
            self._scripts[name] = self._client.register_script(getattr(_scripts, name))
        from ._writebehind import Flusher

        self._flusher = Flusher(self)
        try:
            await self._client.ping()
            await self._recover(initial=True)
        except Exception as error:
            self._went_down(error)
        self._flusher.start()

    async def close(self) -> None:
        """Stop background work (the flusher finishes its batch) and close the connections."""
        if self._closed:
            return
        self._closed = True
        if self._flusher is not None:
            await self._flusher.stop()
        for task in (self._listener, self._probe, *self._flights.values()):
            if task is not None and not task.done():
                task.cancel()
        await asyncio.gather(*(t for t in (self._listener, self._probe, *self._flights.values()) if t is not None), return_exceptions=True)
        for client in (self._client, self._background):
            if client is not None:
                await client.aclose()

    def reconfigure(self, settings: CacheSettings) -> None:
        """Apply a change confined to live keys: TTLs, jitter, namespaces, bounds and write-behind tuning."""
        self.settings = settings
        self._codec = codec_for(settings)
        if self._local is not None:
            self._local.resize(settings.memory_max_entries)
        for namespace in self._namespaces.values():
            namespace.configure(settings)

    # -- the Cache protocol -----------------------------------------------------------------

    async def get(self, key: str, *, namespace: str = "default", tenant_id: str | None = None) -> Any | None:
        """Return the cached value, or None when there is none (a miss)."""
        started = perf_counter()
        ns = self._namespaces.get(namespace) or self._namespace(namespace)
        full = _full(namespace, key, tenant_id)
        stats = ns.stats
        local = self._local
        if local is not None and ns.local:
            value = local.get(full)
            if value is not MISS:
                stats.hits_local += 1
                stats.get_latency.observe(perf_counter() - started)
                return value
        if self._redis_up:
            value = await self._read(ns, full)
            if value is not MISS:
                stats.hits_redis += 1
                stats.get_latency.observe(perf_counter() - started)
                return value
        stats.misses += 1
        stats.get_latency.observe(perf_counter() - started)
        return None

    async def set(
        self,
        key: str,
        value: Any,
        *,
        ttl: float | None = None,
        tags: Iterable[str] = (),
        namespace: str = "default",
        tenant_id: str | None = None,
    ) -> None:
        """Store ``value`` for ``ttl`` seconds (None: the namespace's TTL; 0: no expiry), indexed under ``tags``.

        This is cache-aside: it never calls the namespace's writer (see :meth:`write`).
        """
        started = perf_counter()
        ns = self._namespaces.get(namespace) or self._namespace(namespace)
        await self._store(ns, _full(namespace, key, tenant_id), value, ttl, _tags(tags, tenant_id))
        ns.stats.set_latency.observe(perf_counter() - started)

    async def delete(self, key: str, *, namespace: str = "default", tenant_id: str | None = None) -> None:
        """Drop one entry from every layer and every worker."""
        ns = self._namespaces.get(namespace) or self._namespace(namespace)
        full = _full(namespace, key, tenant_id)
        ns.stats.deletes += 1
        self.stats_registry.invalidations["key"] += 1
        self._touched(full)
        if self._local is not None:
            self._local.drop(full)
        if not self._uses_redis:
            return
        if self._redis_up:
            try:
                assert self._client is not None
                async with self._client.pipeline(transaction=False) as pipe:
                    pipe.unlink(self._value_key(full))
                    pipe.publish(self._channel, self._message(keys=[full]))
                    await self._call(pipe.execute())
                return
            except _Unavailable:
                pass
        self._remember(keys=(full,))

    async def invalidate_tags(self, *tags: str) -> None:
        """Drop every entry stored with any of ``tags``, in every layer and every worker."""
        checked = tuple(_check_tag(tag) for tag in tags)
        self.stats_registry.invalidations["tag"] += len(checked)
        await self._invalidate(checked)

    # -- the richer API ---------------------------------------------------------------------

    async def invalidate_tenant(self, tenant_id: str) -> None:
        """Drop every entry stored with ``tenant_id`` (in any namespace), in every layer and every worker."""
        _check_tenant(tenant_id)
        self.stats_registry.invalidations["tenant"] += 1
        await self._invalidate((TENANT_TAG + tenant_id,))

    async def get_or_set(
        self,
        key: str,
        loader: Callable[[], Any],
        *,
        ttl: float | None = None,
        tags: Iterable[str] = (),
        namespace: str = "default",
        tenant_id: str | None = None,
    ) -> Any:
        """Return the cached value, or call ``loader()`` (sync or async) once, cache its result and return it.

        Concurrent calls for the same cold key share one loader call in this process; across
        processes a Redis lock lets one load while the others wait for its value (up to
        ``lock_timeout``, then they load themselves). A loader's exception reaches every caller
        waiting on it and nothing is cached. ``None`` results are cached too.
        """
        started = perf_counter()
        ns = self._namespaces.get(namespace) or self._namespace(namespace)
        full = _full(namespace, key, tenant_id)
        stats = ns.stats
        local = self._local
        if local is not None and ns.local:
            value = local.get(full)
            if value is not MISS:
                stats.hits_local += 1
                stats.get_latency.observe(perf_counter() - started)
                return value
        flight = self._flights.get(full)
        if flight is None:
            flight = asyncio.ensure_future(self._fill(ns, full, loader, ttl, _tags(tags, tenant_id)))
            self._flights[full] = flight
            flight.add_done_callback(lambda done: self._landed(full, done))
        else:
            stats.coalesced += 1
        value, outcome = await asyncio.shield(flight)
        if outcome == "redis":
            stats.hits_redis += 1
        else:
            stats.misses += 1
        stats.get_latency.observe(perf_counter() - started)
        return value

    async def write(
        self,
        key: str,
        value: Any,
        *,
        ttl: float | None = None,
        tags: Iterable[str] = (),
        namespace: str = "default",
        tenant_id: str | None = None,
    ) -> None:
        """Write ``value`` to the system of record and the cache, as the namespace's ``write_policy`` says.

        - ``write-through``: await the writer, then cache the value (every worker sees it).
        - ``write-around``: await the writer, then drop the cached entry everywhere.
        - ``write-behind``: cache the value and append the write to the namespace's Redis stream in
          one atomic step; return once Redis has it. A flusher calls the writer later. When Redis is
          down, the backlog is past ``write_behind_max_backlog``, or the backend is ``memory``, the
          write is made synchronously instead (write-through), so an acknowledged write is never
          only in memory.

        Raises :class:`NoWriterError` (a ``LookupError``) when a synchronous write is needed and
        no writer is registered for the namespace in this process, and whatever the writer raises.
        """
        ns = self._namespaces.get(namespace) or self._namespace(namespace)
        full = _full(namespace, key, tenant_id)
        tag_tuple = _tags(tags, tenant_id)
        stats = ns.stats
        if ns.policy == "write-behind":
            reason = "memory-backend" if not self._uses_redis else "redis-down" if not self._redis_up else None
            if reason is None and stats.wb_backlog >= self.settings.write_behind_max_backlog:
                reason = "backlog-full"
            if reason is None or (reason == "backlog-full" and namespace not in self._writers):
                try:
                    await self._enqueue(ns, full, key, tenant_id, value, ttl, tag_tuple)
                    if reason == "backlog-full":
                        stats.wb_sync["backlog-full-no-writer"] = stats.wb_sync.get("backlog-full-no-writer", 0) + 1
                    return
                except _Unavailable:
                    reason = "redis-down"
            assert reason is not None
            await self._call_writer(namespace, PendingWrite(namespace, key, value, tenant_id, time.time_ns()))
            stats.wb_sync[reason] = stats.wb_sync.get(reason, 0) + 1
            await self._store(ns, full, value, ttl, tag_tuple)
            return
        await self._call_writer(namespace, PendingWrite(namespace, key, value, tenant_id, time.time_ns()))
        if ns.policy == "write-through":
            await self._store(ns, full, value, ttl, tag_tuple)
        else:
            await self.delete(key, namespace=namespace, tenant_id=tenant_id)

    def register_writer(self, namespace: str, writer: Writer) -> Callable[[], None]:
        """Register the async callable that persists ``namespace``'s writes; return a function that unregisters it.

        The writer receives a :class:`PendingWrite` (``namespace``, ``key``, ``value``,
        ``tenant_id``, ``version``, ``attempt``, ``write_behind``). For write-behind namespaces this
        worker also starts flushing the namespace's stream. Registrations survive plugin restarts.
        """
        _check_namespace(namespace)
        self._writers[namespace] = writer
        if self._flusher is not None:
            self._flusher.wake()

        def unregister() -> None:
            if self._writers.get(namespace) is writer:
                del self._writers[namespace]

        return unregister

    def unregister_writer(self, namespace: str) -> None:
        """Stop using this process's writer for ``namespace`` (its pending writes wait for another worker)."""
        self._writers.pop(namespace, None)

    async def drain(self, namespace: str | None = None, *, timeout: float = 10.0) -> int:  # noqa: ASYNC109 - returns what is left
        """Wait until the write-behind backlog (of ``namespace``, or of every namespace this worker flushes) is empty.

        Return the number of writes still pending when ``timeout`` ran out (0 when drained).
        """
        if self._flusher is None:
            return 0
        return int(await self._flusher.drain(namespace, timeout))

    def stats(self, namespace: str | None = None) -> dict[str, Any]:
        """Counters: one namespace's, or ``{namespace: counters}`` plus the process-wide ones under ``"_"``."""
        if namespace is not None:
            return self.stats_registry.namespace(namespace).as_dict()
        out: dict[str, Any] = {name: s.as_dict() for name, s in self.stats_registry.namespaces.items()}
        out["_"] = {
            "backend": self.backend,
            "redis_available": self.redis_available,
            "memory_entries": self.memory_entries,
            "invalidations": dict(self.stats_registry.invalidations),
            "redis_errors": self.stats_registry.redis_errors,
            "rejected_entries": dict(self.stats_registry.rejected),
            "redis_switches": dict(self.stats_registry.redis_switches),
        }
        return out

    @property
    def redis_available(self) -> bool:
        """True while Redis answers (always False for the memory backend)."""
        return self._redis_up

    @property
    def memory_entries(self) -> int:
        return len(self._local) if self._local is not None else 0

    async def ping(self) -> bool:
        """Health check: raise when the backend uses Redis and Redis does not answer."""
        if not self._uses_redis:
            return True
        if not self._redis_up:
            down = f" for {monotonic() - self._down_since:.1f} s" if self._down_since is not None else ""
            raise ConnectionError(f"redis at {_safe_url(self.settings.redis_url)} is down{down}; serving from the in-process layer")
        assert self._client is not None
        try:
            return bool(await self._client.ping())
        except Exception as error:
            self._went_down(error)
            raise

    # -- internals: reading and writing ----------------------------------------------------

    def _namespace(self, name: str) -> Namespace:
        _check_namespace(name)
        ns = Namespace(name, self.stats_registry.namespace(name))
        ns.configure(self.settings)
        self._namespaces[name] = ns
        return ns

    def _value_key(self, full: str) -> str:
        return self._prefix + "v:" + full

    def _tag_key(self, tag: str) -> str:
        return self._prefix + "t:" + tag

    def _lock_key(self, full: str) -> str:
        return self._prefix + "l:" + full

    def stream_key(self, namespace: str) -> str:
        return self._prefix + "wb:" + namespace

    def dead_key(self, namespace: str) -> str:
        return self._prefix + "wb-dead:" + namespace

    def _message(self, *, keys: Iterable[str] = (), tags: Iterable[str] = (), clear: bool = False, write_id: int | None = None) -> str:
        body: dict[str, Any] = {"o": self._origin}
        if write_id is not None:
            body["w"] = write_id
        if keys:
            body["k"] = list(keys)
        if tags:
            body["t"] = list(tags)
        if clear:
            body["c"] = 1
        return json.dumps(body, separators=(",", ":"))

    def _ttl(self, ns: Namespace, ttl: float | None) -> float:
        seconds = ns.ttl if ttl is None else ttl
        if seconds and ns.jitter:
            seconds *= 1.0 - ns.jitter * random.random()
        return seconds

    async def _call(self, awaitable: Awaitable[Any]) -> Any:
        try:
            return await awaitable
        except Exception as error:  # any type: a client bug must degrade the cache, never fail the request
            self._failed(error)

    def _failed(self, error: BaseException) -> NoReturn:
        """Classify a Redis error: an error reply is counted and logged; anything else marks Redis down.

        Exceptions that are not redis-py's own (an ``AttributeError`` from inside a connection
        health check, say) count as an outage: the connection may be broken, and the probe replaces
        the pool's connections before Redis is used again.
        """
        if isinstance(error, RedisError) and not isinstance(error, _DOWN_ERRORS):
            self.stats_registry.redis_errors += 1
            log.warning("redis command failed: %r", error)
        else:
            self._went_down(error)
        raise _Unavailable(_describe(error)) from error

    async def _read(self, ns: Namespace, full: str) -> Any:
        """Read an entry from Redis and keep an in-process copy (two-layer); MISS when absent or unreadable."""
        assert self._client is not None
        watch = self._watch(full)
        try:
            raw = await self._call(self._client.get(self._value_key(full)))
        except _Unavailable:
            return MISS
        finally:
            self._unwatch(full, watch)
        if raw is None:
            return MISS
        return self._decoded(ns, full, raw, watch)

    def _watch(self, full: str) -> _Watch:
        watch = self._watches.get(full)
        if watch is None:
            watch = self._watches[full] = _Watch()
        else:
            watch.refs += 1
        return watch

    def _unwatch(self, full: str, watch: _Watch) -> None:
        watch.refs -= 1
        if watch.refs == 0 and self._watches.get(full) is watch:
            del self._watches[full]

    def _touched(self, full: str, write_id: int | None = None) -> None:
        """An entry was written (``write_id``) or dropped: a read of it in flight keeps a copy only if it read that write."""
        watch = self._watches.get(full)
        if watch is not None:
            if write_id is None:
                watch.dirty = True
            else:
                watch.writes.add(write_id)

    def _touched_tags(self, tags: Iterable[str]) -> None:
        for watch in self._watches.values():
            watch.tags.update(tags)

    def _touched_all(self) -> None:
        for watch in self._watches.values():
            watch.dirty = True

    def _encode(self, ns: Namespace, full: str, value: Any, expires_at: float, tags: tuple[str, ...], write_id: int) -> bytes:
        """The Redis entry of ``value`` (checked as data on the memory backend too, so it behaves as it will with Redis)."""
        try:
            if not self._uses_redis:
                self._codec.check(value)
                return b""
            return self._codec.encode(value, expires_at, tags, write_id)
        except NotData as error:
            key = full.split(":", 2)[2]
            raise NotData(f"cannot cache the value of namespace '{ns.name}', key '{key}': {error}") from None

    def refused(self, what: str, error: DecodeError) -> None:
        """Count an entry that was not loaded; log it (at most once a minute per reason: an attack must not flood the logs)."""
        registry = self.stats_registry
        if isinstance(error, RefusedEntry):
            registry.rejected[error.reason] = registry.rejected.get(error.reason, 0) + 1
            message = "cache entry %r refused and treated as a miss: %s (someone who can write to Redis may be tampering with it)"
        else:
            registry.redis_errors += 1
            message = "unreadable cache entry %r treated as a miss: %s"
        now = monotonic()
        if now - self._refusals_logged.get(error.reason, -REFUSAL_LOG_INTERVAL) >= REFUSAL_LOG_INTERVAL:
            self._refusals_logged[error.reason] = now
            log.warning(message, what, error)

    def _decoded(self, ns: Namespace, full: str, raw: bytes, watch: _Watch) -> Any:
        try:
            value, expires_at, tags, write_id = self._codec.decode(raw)
        except DecodeError as error:
            self.refused(full, error)
            return MISS
        # Keep a copy only if no invalidation happened meanwhile: it could have been for this entry.
        if self._local is not None and ns.local and watch.allows(tags, write_id):
            life = self.settings.local_ttl
            if expires_at:
                life = min(life, expires_at - time.time())
            if life > 0:
                self._local.put(full, value, monotonic() + life, tags, ns.stats)
        return value

    async def _store(
        self, ns: Namespace, full: str, value: Any, ttl: float | None, tags: tuple[str, ...], lock: tuple[str, str] | None = None
    ) -> None:
        seconds = self._ttl(ns, ttl)
        write_id = random.getrandbits(63)
        payload = self._encode(ns, full, value, time.time() + seconds if seconds else 0.0, tags, write_id)
        ns.stats.sets += 1
        self._touched(full, write_id)
        if self._local is not None and ns.local:
            life = seconds or NEVER
            if self._two_layer:
                life = min(life, self.settings.local_ttl)
            self._local.put(full, value, monotonic() + life, tags, ns.stats)
        if not self._uses_redis:
            return
        if self._redis_up:
            lock_key, token = lock if lock is not None else (self._value_key(full), "")
            try:
                await self._call(
                    self._scripts["SET"](
                        keys=[self._value_key(full), lock_key, *(self._tag_key(t) for t in tags)],
                        args=[payload, int(seconds * 1000), self._channel, self._message(keys=[full], write_id=write_id), token],
                    )
                )
                return
            except _Unavailable:
                pass
        self._remember(keys=(full,))

    async def _enqueue(
        self, ns: Namespace, full: str, key: str, tenant_id: str | None, value: Any, ttl: float | None, tags: tuple[str, ...]
    ) -> None:
        seconds = self._ttl(ns, ttl)
        write_id = random.getrandbits(63)
        payload = self._encode(ns, full, value, time.time() + seconds if seconds else 0.0, tags, write_id)
        await self._call(
            self._scripts["WRITE_BEHIND"](
                keys=[self._value_key(full), self.stream_key(ns.name), *(self._tag_key(t) for t in tags)],
                args=[payload, int(seconds * 1000), self._channel, self._message(keys=[full], write_id=write_id), key, tenant_id or ""],
            )
        )
        ns.stats.sets += 1
        ns.stats.wb_enqueued += 1
        ns.stats.wb_backlog += 1
        self._touched(full, write_id)
        if self._local is not None and ns.local:
            life = min(seconds or NEVER, self.settings.local_ttl)
            self._local.put(full, value, monotonic() + life, tags, ns.stats)

    async def _call_writer(self, namespace: str, write: PendingWrite) -> None:
        writer = self._writers.get(namespace)
        if writer is None:
            raise NoWriterError(
                f"no writer is registered for cache namespace '{namespace}' in this process; "
                f"call kernel.cache().register_writer('{namespace}', writer) at start-up"
            )
        await writer(write)

    async def _invalidate(self, tags: tuple[str, ...]) -> None:
        self._touched_tags(tags)
        if self._local is not None:
            self._local.drop_tags(tags)
        if not self._uses_redis or not tags:
            return
        if self._redis_up:
            try:
                await self._invalidate_in_redis(tags)
                return
            except _Unavailable:
                pass
        self._remember(tags=tags)

    async def _invalidate_in_redis(self, tags: Iterable[str], keys: Iterable[str] = ()) -> None:
        assert self._client is not None
        tags, keys = list(tags), list(keys)
        for tag in tags:
            while await self._call(self._scripts["INVALIDATE_TAG"](keys=[self._tag_key(tag)], args=[_TAG_BATCH])) == _TAG_BATCH:
                pass
        for start in range(0, len(keys), _TAG_BATCH):
            await self._call(self._client.unlink(*(self._value_key(k) for k in keys[start : start + _TAG_BATCH])))
        await self._call(
            self._client.publish(self._channel, self._message(keys=keys[:_TAG_BATCH], tags=tags, clear=len(keys) > _TAG_BATCH))
        )

    # -- internals: stampede protection ----------------------------------------------------

    async def _fill(self, ns: Namespace, full: str, loader: Callable[[], Any], ttl: float | None, tags: tuple[str, ...]) -> tuple[Any, str]:
        if self._redis_up:
            assert self._client is not None
            token = uuid.uuid4().hex
            lock_key = self._lock_key(full)
            deadline = monotonic() + self.settings.lock_timeout
            delay = 0.002
            waited = False
            while self._redis_up:
                watch = self._watch(full)
                try:
                    found = await self._call(
                        self._scripts["GET_OR_LOCK"](
                            keys=[self._value_key(full), lock_key], args=[token, int(self.settings.lock_timeout * 1000)]
                        )
                    )
                except _Unavailable:
                    break
                finally:
                    self._unwatch(full, watch)
                if found[0] == 1:
                    value = self._decoded(ns, full, found[1], watch)
                    if value is not MISS:
                        return value, "redis"
                    break
                if found[0] == 2:
                    try:
                        value = await self._load(ns, loader)
                    except BaseException:
                        with contextlib.suppress(_Unavailable):
                            await self._call(self._scripts["RELEASE"](keys=[lock_key], args=[token]))
                        raise
                    await self._store(ns, full, value, ttl, tags, lock=(lock_key, token))
                    return value, "load"
                if not waited:
                    waited = True
                    ns.stats.lock_waits += 1
                if monotonic() >= deadline:
                    log.warning("waited %.1f s for another worker to load %r; loading it here", self.settings.lock_timeout, full)
                    break
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.05)
        value = await self._load(ns, loader)
        await self._store(ns, full, value, ttl, tags)
        return value, "load"

    async def _load(self, ns: Namespace, loader: Callable[[], Any]) -> Any:
        started = perf_counter()
        ns.stats.loads += 1
        try:
            value = loader()
            if inspect.isawaitable(value):
                value = await value
        except BaseException:
            ns.stats.load_errors += 1
            raise
        finally:
            ns.stats.load_latency.observe(perf_counter() - started)
        return value

    def _landed(self, full: str, task: asyncio.Task[tuple[Any, str]]) -> None:
        if self._flights.get(full) is task:
            del self._flights[full]
        if not task.cancelled():
            task.exception()  # retrieved here, so a failure every caller already saw is not logged again

    # -- internals: Redis availability -----------------------------------------------------

    def _went_down(self, error: BaseException) -> None:
        self.stats_registry.redis_errors += 1
        if self._closed or (not self._redis_up and self._probe is not None and not self._probe.done()):
            return
        if self._redis_up:
            self._redis_up = False
            self._down_since = monotonic()
            self._up_event.clear()
            self.stats_registry.redis_switches["down"] += 1
            log.warning(
                "redis at %s is unavailable (%s); serving from the in-process layer and loaders until it returns",
                _safe_url(self.settings.redis_url),
                _describe(error),
            )
        elif self._down_since is None:
            self._down_since = monotonic()
            log.warning(
                "redis at %s is unavailable at start-up (%s); serving from the in-process layer and loaders",
                _safe_url(self.settings.redis_url),
                _describe(error),
            )
        listener = self._listener
        if listener is not None and listener is not asyncio.current_task() and not listener.done():
            listener.cancel()
        self._probe = asyncio.get_running_loop().create_task(self._reconnect(), name="botcriptofy-cache-redis-probe")

    async def _reconnect(self) -> None:
        assert self._client is not None and self._background is not None
        delay = min(0.1, self.settings.reconnect_interval)
        while not self._closed:
            await asyncio.sleep(delay)
            delay = self.settings.reconnect_interval
            try:
                await self._client.ping()
            except Exception:  # whatever the client raises, keep probing: this task is the only way back
                continue
            try:
                await self._recover(initial=False)
                return
            except Exception as error:
                log.info("redis answered but recovery failed (%s); retrying", _describe(error))

    async def _recover(self, *, initial: bool) -> None:
        """Subscribe, forget what may be stale, replay remembered invalidations, then use Redis again."""
        assert self._client is not None and self._background is not None
        if not initial:
            await self._client.connection_pool.disconnect()
            await self._background.connection_pool.disconnect()
        subscribed = asyncio.get_running_loop().create_future()
        listener = asyncio.get_running_loop().create_task(self._listen(subscribed), name="botcriptofy-cache-invalidations")
        try:
            await asyncio.wait_for(asyncio.shield(subscribed), timeout=max(1.0, self.settings.redis_timeout * 4))
        except BaseException:
            listener.cancel()
            raise
        self._listener = listener
        if not initial and self._local is not None:
            self._local.clear()
        self._touched_all()
        if self._remembered_keys or self._remembered_tags or self._remembered_overflow:
            await self._replay_remembered()
        self._redis_up = True
        self._up_event.set()
        if not initial:
            down_for = monotonic() - self._down_since if self._down_since is not None else 0.0
            self.stats_registry.redis_switches["up"] += 1
            log.info("redis at %s is available again after %.1f s; caching in Redis resumed", _safe_url(self.settings.redis_url), down_for)
        self._down_since = None

    async def _replay_remembered(self) -> None:
        keys, tags, overflow = list(self._remembered_keys), list(self._remembered_tags), self._remembered_overflow
        try:
            if overflow:
                await self._flush_all()
            else:
                await self._invalidate_in_redis(tags, keys)
        except _Unavailable:
            raise
        self._remembered_keys.difference_update(keys)
        self._remembered_tags.difference_update(tags)
        if overflow:
            self._remembered_overflow = False

    async def _flush_all(self) -> None:
        """Drop every entry under the prefix (after an outage too long to remember): SCAN, off the request path."""
        assert self._client is not None
        log.warning("too many invalidations during the redis outage to replay; dropping every cached entry under %r", self._prefix)
        batch: list[bytes] = []
        async for found in self._client.scan_iter(match=self._prefix + "v:*", count=1000):
            batch.append(found)
            if len(batch) >= _TAG_BATCH:
                await self._call(self._client.unlink(*batch))
                batch.clear()
        if batch:
            await self._call(self._client.unlink(*batch))
        await self._call(self._client.publish(self._channel, self._message(clear=True)))

    def _remember(self, *, keys: Iterable[str] = (), tags: Iterable[str] = ()) -> None:
        self._remembered_keys.update(keys)
        self._remembered_tags.update(tags)
        if len(self._remembered_keys) + len(self._remembered_tags) > _MAX_REMEMBERED:
            self._remembered_keys.clear()
            self._remembered_tags.clear()
            self._remembered_overflow = True

    async def _listen(self, subscribed: asyncio.Future[None]) -> None:
        assert self._background is not None
        pubsub = self._background.pubsub()
        try:
            await pubsub.subscribe(self._channel)
            subscribed.set_result(None)
            while True:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if message is not None and message.get("type") == "message":
                    self._on_message(message["data"])
        except asyncio.CancelledError:
            raise
        except Exception as error:
            if not subscribed.done():
                subscribed.set_exception(error)
            else:
                self._went_down(error)
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call]

    def _on_message(self, data: bytes) -> None:
        try:
            message = json.loads(data)
        except ValueError:
            return
        if message.get("o") == self._origin:
            return
        self.stats_registry.invalidations["received"] += 1
        local = self._local
        if local is None:
            return
        if message.get("c"):
            self._touched_all()
            local.clear()
            return
        write_id = message.get("w")
        for full in message.get("k", ()):
            self._touched(full, write_id)
            local.drop(full)
        tags = message.get("t")
        if tags:
            self._touched_tags(tags)
            local.drop_tags(tags)


def codec_for(settings: CacheSettings) -> Codec:
    return Codec(
        settings.serializer, settings.signing_key.get_secret_value(), [key.get_secret_value() for key in settings.previous_signing_keys]
    )


def _full(namespace: str, key: str, tenant_id: str | None) -> str:
    if tenant_id is None:
        return f"{namespace}::{key}"
    if ":" in tenant_id or not tenant_id:
        _check_tenant(tenant_id)
    return f"{namespace}:{tenant_id}:{key}"


def _tags(tags: Iterable[str], tenant_id: str | None) -> tuple[str, ...]:
    checked = tuple(_check_tag(tag) for tag in tags) if tags else ()
    if tenant_id is not None:
        checked = (*checked, TENANT_TAG + tenant_id)
    return checked


def _check_tag(tag: str) -> str:
    if not isinstance(tag, str) or not tag or tag.startswith("@") or "\x1f" in tag:
        raise ValueError(f"invalid cache tag {tag!r}: tags are non-empty strings not starting with '@'")
    return tag


def _check_tenant(tenant_id: str) -> None:
    if not tenant_id or ":" in tenant_id:
        raise ValueError(f"invalid tenant_id {tenant_id!r}: it must be non-empty and contain no ':'")


def _check_namespace(name: str) -> None:
    if not isinstance(name, str) or not name or ":" in name:
        raise ValueError(f"invalid cache namespace {name!r}: it must be non-empty and contain no ':'")


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


def _safe_url(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
    return url
