"""Value types and protocols that hooks exchange."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel
from starlette.middleware import Middleware as _StarletteMiddleware


@dataclass(frozen=True, slots=True)
class SettingsSchema:
    """A plugin's settings: a pydantic model with defaults, and the keys that may change live.

    A change to any other key restarts the plugin (``shutdown`` then ``startup``) in the next
    generation; a change confined to ``live`` keys calls its ``settings_changed`` hook instead.
    """

    model: type[BaseModel]
    live: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Actor:
    """Who is calling: a user, an API key, or a service principal such as an agent."""

    id: str
    kind: str
    tenant_id: str | None = None
    permissions: frozenset[str] = frozenset()
    super_admin: bool = False
    attributes: Mapping[str, Any] = field(default_factory=dict)

    def can(self, permission: str) -> bool:
        """Return whether the actor holds ``permission`` (``department:action``; ``department:*`` covers a department)."""
        if self.super_admin or permission in self.permissions:
            return True
        department = permission.partition(":")[0]
        return f"{department}:*" in self.permissions or "*" in self.permissions


class Middleware(_StarletteMiddleware):
    """Starlette middleware with a ``priority``: lower numbers wrap further out.

    Conventional bands: 0-99 transport guards (flood guard, rate limits), 100-199 observability,
    200-299 identity, 300+ everything else.
    """

    def __init__(self, cls: Any, *args: Any, priority: int = 300, **kwargs: Any) -> None:
        super().__init__(cls, *args, **kwargs)
        self.priority = priority


@dataclass(frozen=True, slots=True)
class HealthCheck:
    """A readiness check: ``check`` raises (or returns a falsy value) when the dependency is down."""

    name: str
    check: Callable[[], Awaitable[Any] | Any]
    timeout: float = 2.0


@dataclass(frozen=True, slots=True)
class Migrations:
    """A plugin's Alembic migrations: the script directory and the metadata of its models."""

    directory: Path
    metadata: Any = None


@dataclass(frozen=True, slots=True)
class Notification:
    """A message for people. ``channel`` None means every channel that can reach ``recipient``."""

    recipient: str
    subject: str
    body: str
    channel: str | None = None
    severity: str = "info"
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DataSubject:
    """One person whose data a privacy request concerns."""

    user_id: str
    tenant_id: str | None = None
    email: str | None = None


@dataclass(frozen=True, slots=True)
class RateLimit:
    """One limit: ``limit`` requests per ``period`` seconds with bursts up to ``burst``; a hit costs ``cost``."""

    key: str
    limit: int
    period: float
    burst: int
    cost: int = 1


@dataclass(frozen=True, slots=True)
class RateLimitDecision:
    """The outcome of a rate-limit check, with the figures for the ``RateLimit-*`` headers."""

    allowed: bool
    limit: int
    remaining: int
    reset_after: float
    retry_after: float | None = None
    key: str | None = None


@dataclass(frozen=True, slots=True)
class Entitlements:
    """What a tenant's plan allows. A limit of ``None`` means unlimited."""

    plan: str
    limits: Mapping[str, int | None]
    features: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class QuotaDecision:
    """The outcome of consuming a quota; ``upgrade_to`` names the plan that lifts a refused quota."""

    allowed: bool
    quota: str
    used: int
    limit: int | None
    plan: str
    upgrade_to: str | None = None


@runtime_checkable
class Database(Protocol):
    """What the storage plugin provides through the ``database`` hook.

    ``dialect`` is ``"sqlite"`` or ``"postgresql"``; ``engine`` is the SQLAlchemy ``AsyncEngine``.
    """

    url: str
    dialect: str
    engine: Any

    def session(
        self, *, tenant_id: str | None = None, system: bool = False, write_lock: bool = False
    ) -> AbstractAsyncContextManager[Any]:
        """Open a unit of work: an ``AsyncSession`` in a transaction that commits when the block succeeds.

        With ``tenant_id``, queries on tenant-owned tables (those with a ``tenant_id`` column) see
        only that tenant's rows and new rows get that tenant. ``system=True`` opens an unscoped
        session for platform jobs. With neither, reading a tenant-owned table is an error.
        ``write_lock=True`` takes the write lock when the transaction begins (SQLite's
        ``BEGIN IMMEDIATE``), so a transaction that reads and then writes waits for other writers
        instead of failing with "database is locked"; PostgreSQL needs nothing of the kind.
        """
        ...


@runtime_checkable
class Cache(Protocol):
    """What a cache backend provides through the ``cache_backend`` hook."""

    async def get(self, key: str, *, namespace: str = "default") -> Any | None: ...

    async def set(
        self, key: str, value: Any, *, ttl: float | None = None, tags: Iterable[str] = (), namespace: str = "default"
    ) -> None: ...

    async def delete(self, key: str, *, namespace: str = "default") -> None: ...

    async def invalidate_tags(self, *tags: str) -> None: ...


@runtime_checkable
class RateLimiter(Protocol):
    """What a rate limiter provides through the ``rate_limiter`` hook."""

    async def hit(self, *limits: RateLimit) -> RateLimitDecision:
        """Count one hit against every limit atomically; refuse when any is exhausted."""
        ...
