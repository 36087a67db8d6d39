"""``Idempotency-Key`` on every unsafe ``/v1`` request: a retry gets the first response, the work runs once.

The middleware reads the whole body of a request carrying the header, fingerprints it
(method, path, query, body), and claims ``sha256(caller, key)`` in the store:

- the key is new (or expired): the request runs; its response (status, the headers that describe
  it, body) is stored before it is sent, unless it is a 5xx or a 429, which release the key so
  that a retry runs again;
- the key holds a response for the same fingerprint: that response is sent again, with
  ``Idempotent-Replayed: true``;
- the key was used for another request: 422;
- the first request with the key is still running: 409 with ``Retry-After`` (the retry is not
  held open while it waits).

A store that fails after the work ran (its database went down meanwhile) does not change the
answer: the response is sent as the route made it, and the key stays claimed until its lease
(``kernel.idempotency_lease``) ends, answering 409 meanwhile, then frees itself.

The caller is the resolved actor (``kind:id``), or the client address for anonymous requests.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from typing import TYPE_CHECKING

from starlette.requests import ClientDisconnect, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ._errors import ProblemError
from ._http import current_actor, problem_response
from ._stash import StashKey
from ._types import IdempotencyRecord, IdempotencyStore, Middleware, StoredResponse

if TYPE_CHECKING:
    from ._kernel import Kernel

log = logging.getLogger("botcriptofy.http")

HEADER = b"idempotency-key"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
PREFIX = "/v1/"
MAX_KEY_LENGTH = 255
# Response headers that describe the result and are replayed; per-request ones (rate limits, dates) are not.
KEPT_HEADERS = frozenset(
    {"content-type", "location", "etag", "last-modified", "link", "content-language", "cache-control", "www-authenticate"}
)
IDEMPOTENCY_PRIORITY = 250
PROBLEMS = "https://botcriptofy.dev/problems/"
MEMORY_STORE: StashKey[MemoryIdempotencyStore] = StashKey("botcriptofy.idempotency_memory_store")


class MemoryIdempotencyStore:
    """The fallback store: one process's memory, lost on restart. Enable the storage plugin for a durable one."""

    def __init__(self) -> None:
        # key -> (fingerprint, response, expires_at, locked_until), on the monotonic clock
        self._records: dict[str, tuple[str, StoredResponse | None, float, float]] = {}
        self._purged = time.monotonic()

    async def claim(self, key: str, fingerprint: str, *, ttl: float, lease: float) -> IdempotencyRecord | None:
        now = time.monotonic()
        if now - self._purged > 60:
            self._records = {k: v for k, v in self._records.items() if v[2] > now}
            self._purged = now
        found = self._records.get(key)
        if found is not None and found[2] > now and (found[1] is not None or found[3] > now):
            return IdempotencyRecord(found[0], found[1])
        self._records[key] = (fingerprint, None, now + ttl, now + lease)
        return None

    async def complete(self, key: str, response: StoredResponse, *, ttl: float) -> None:
        found = self._records.get(key)
        if found is not None:
            self._records[key] = (found[0], response, time.monotonic() + ttl, 0.0)

    async def release(self, key: str) -> None:
        self._records.pop(key, None)


def store_of(kernel: Kernel) -> IdempotencyStore:
    """The store the ``idempotency_store`` hook provides, or the process's memory store."""
    found = kernel._provide("idempotency_store")
    if found is not None:
        return found  # type: ignore[no-any-return]
    return kernel.stash.setdefault(MEMORY_STORE, MemoryIdempotencyStore())


def _problem(status: int, title: str, detail: str, kind: str, **headers: str) -> ProblemError:
    return ProblemError(status, title, detail, type=PROBLEMS + kind, headers=headers or None)


class IdempotencyMiddleware:
    """Apply ``Idempotency-Key`` to unsafe ``/v1`` requests (see the module docstring)."""

    def __init__(self, app: ASGIApp, *, kernel: Kernel) -> None:
        self.app = app
        self.kernel = kernel
        settings = kernel.kernel_settings
        self.ttl = settings.idempotency_ttl
        self.lease = settings.idempotency_lease
        self.max_body = max(8 * 1024 * 1024, settings.max_body_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in SAFE_METHODS or not scope["path"].startswith(PREFIX):
            await self.app(scope, receive, send)
            return
        raw_key = next((value for name, value in scope["headers"] if name == HEADER), None)
        if raw_key is None:
            await self.app(scope, receive, send)
            return
        await self._handle(raw_key, scope, receive, send)

    async def _handle(self, raw_key: bytes, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        if not 1 <= len(raw_key) <= MAX_KEY_LENGTH or not all(33 <= byte <= 126 for byte in raw_key):
            problem = _problem(
                400,
                "Invalid Idempotency-Key",
                f"The Idempotency-Key header must be 1 to {MAX_KEY_LENGTH} visible ASCII characters, such as a UUID.",
                "idempotency-key-invalid",
            )
            await problem_response(problem)(scope, receive, send)
            return
        actor = await current_actor(request)
        client = request.client.host if request.client else ""
        caller = f"{actor.kind}:{actor.id}" if actor is not None else f"client:{client}"
        body = await self._read_body(receive)
        key = hashlib.sha256(b"\0".join([caller.encode(), raw_key])).hexdigest()
        fingerprint = hashlib.sha256(
            b"\0".join([scope["method"].encode(), scope["path"].encode(), scope.get("query_string", b""), body])
        ).hexdigest()
        store = store_of(self.kernel)
        record = await store.claim(key, fingerprint, ttl=self.ttl, lease=self.lease)
        if record is not None:
            await self._answer_from(record, fingerprint, scope, receive, send)
            return
        await self._run(store, key, body, scope, receive, send)

    async def _read_body(self, receive: Receive) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientDisconnect()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                limit = self.max_body
                raise ProblemError(413, "Request body too large", f"A request with an Idempotency-Key may carry at most {limit} bytes.")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _answer_from(self, record: IdempotencyRecord, fingerprint: str, scope: Scope, receive: Receive, send: Send) -> None:
        if record.fingerprint != fingerprint:
            problem = _problem(
                422,
                "Idempotency-Key reused",
                "This Idempotency-Key was already used for a different request (method, path or body); use a new key per request.",
                "idempotency-key-reused",
            )
        elif record.response is None:
            problem = _problem(
                409,
                "Request in progress",
                "The first request with this Idempotency-Key is still running; retry after the delay in Retry-After.",
                "idempotency-key-in-progress",
                **{"Retry-After": "1"},
            )
        else:
            stored = record.response
            headers = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in stored.headers]
            headers.append((b"idempotent-replayed", b"true"))
            headers.append((b"content-length", str(len(stored.body)).encode()))
            await send({"type": "http.response.start", "status": stored.status, "headers": headers})
            await send({"type": "http.response.body", "body": stored.body})
            return
        await problem_response(problem)(scope, receive, send)

    async def _run(self, store: IdempotencyStore, key: str, body: bytes, scope: Scope, receive: Receive, send: Send) -> None:
        delivered = False

        async def replay_body() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        start: Message | None = None
        chunks: list[bytes] = []
        settled = False

        async def hold_until_stored(message: Message) -> None:
            nonlocal start, settled
            if message["type"] == "http.response.start":
                start = message
                return
            if message["type"] != "http.response.body" or start is None:
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            status = start["status"]
            content = b"".join(chunks)
            settled = True
            if status >= 500 or status == 429:
                await self._release_quietly(store, key)
            else:
                kept = tuple(
                    (name.decode("latin-1").lower(), value.decode("latin-1"))
                    for name, value in start.get("headers", ())
                    if name.decode("latin-1").lower() in KEPT_HEADERS
                )
                try:
                    await asyncio.shield(store.complete(key, StoredResponse(status, kept, content), ttl=self.ttl))
                except Exception:
                    # The work is done: its answer goes out. The key stays claimed until its lease ends (a retry
                    # meanwhile gets 409), then frees itself; failing here would turn the answer into a 500.
                    log.warning(
                        "could not store the response of a request with an Idempotency-Key; it was answered, "
                        "and its key frees itself after its lease",
                        exc_info=True,
                    )
            await send(start)
            await send({"type": "http.response.body", "body": content})

        try:
            await self.app(scope, replay_body, hold_until_stored)
        except BaseException:
            if not settled:
                await self._release_quietly(store, key)
            raise
        if not settled:
            await self._release_quietly(store, key)

    @staticmethod
    async def _release_quietly(store: IdempotencyStore, key: str) -> None:
        # The request's own error is the one to report; a key left claimed frees itself after its lease.
        try:
            await asyncio.shield(store.release(key))
        except Exception:
            log.warning("could not release an Idempotency-Key after a failed request; it frees itself after its lease", exc_info=True)


def idempotency_middleware(kernel: Kernel) -> Middleware:
    return Middleware(IdempotencyMiddleware, kernel=kernel, priority=IDEMPOTENCY_PRIORITY)
