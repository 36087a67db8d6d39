"""The ``[storage]`` settings section and the database URL rules."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from botcriptofy import PluginSettings, SettingsSchema

DEFAULT_SQLITE_FILE = "botcriptofy.db"

# Scheme a user may write -> the async driver the plugin runs it with.
_SCHEMES = {
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
    "postgres": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
    "postgresql+psycopg": "postgresql+asyncpg",
    "postgresql+psycopg2": "postgresql+asyncpg",
}


class StorageSettings(PluginSettings):
    """Settings of the storage plugin. Every key has a default; see the plugin README for each one."""

    url: str = Field(
        default="",
        description="Database URL. Empty means SQLite at <kernel.state_dir>/botcriptofy.db (var/botcriptofy.db by default). "
        "postgresql:// and postgres:// URLs run on asyncpg.",
    )
    migrations_url: str = Field(
        default="",
        description="Database URL that migrations (`botcriptofy db upgrade`, auto_upgrade) connect with: on PostgreSQL the role that "
        "owns the tables. Empty means url. Give it to the command that upgrades, not to the service.",
    )
    system_url: str = Field(
        default="",
        description="Database URL of system-wide work (db.session(system=True), the outbox relay): on PostgreSQL a role with "
        "BYPASSRLS that is neither superuser nor owner. Empty means url.",
    )
    echo: bool = Field(default=False, description="Log every SQL statement (live).")
    pool_size: int = Field(default=5, ge=1, le=1000, description="Connections kept open in the pool.")
    max_overflow: int = Field(default=10, ge=0, le=1000, description="Extra connections allowed above pool_size under load.")
    pool_timeout: float = Field(
        default=2.0, gt=0, le=300, description="Seconds a session waits for a free connection before answering 503 (ServiceUnavailable)."
    )
    connect_timeout: float = Field(
        default=2.0, gt=0, le=300, description="Seconds to wait for a new PostgreSQL connection before answering 503."
    )
    retry_after: float = Field(
        default=2.0,
        ge=1,
        le=3600,
        description="Retry-After (seconds) of the 503 answered while the database is unreachable or busy (live).",
    )
    pool_recycle: float = Field(default=1800.0, description="Replace connections older than this many seconds (-1: never).")
    pool_pre_ping: bool = Field(default=True, description="Test each connection before use, so a restarted server is survived.")
    sqlite_busy_timeout: float = Field(default=5.0, ge=0, description="Seconds SQLite waits for a lock held by another connection.")
    sqlite_begin: Literal["deferred", "immediate"] = Field(
        default="deferred",
        description="How SQLite transactions begin: deferred (readers never wait) or immediate (every transaction takes the write "
        "lock first, so read-then-write transactions never fail with 'database is locked'). db.session(write_lock=True) "
        "asks for immediate per session.",
    )
    auto_upgrade: bool = Field(default=True, description="Run every enabled plugin's migrations at start-up (live).")
    rls_role: str = Field(
        default="botcriptofy_app",
        pattern=r"^([a-z_][a-z0-9_]{0,62})?$",
        description="PostgreSQL role that sessions run as so row-level security applies; empty keeps the login role.",
    )
    rls_secret: SecretStr = Field(
        default=SecretStr(""),
        description="PostgreSQL: a secret that signs each tenant session's tenant id, so that SQL injected into a session cannot "
        "name another tenant (app.tenant_id). Give the same value to the service and to `botcriptofy db upgrade`, which "
        "stores a key derived from it where only the tables' owner reads it. Empty: tenant ids are not signed.",
    )
    relay_enabled: bool = Field(default=True, description="Run the outbox relay in this process (live).")
    relay_poll_interval: float = Field(
        default=1.0, gt=0, le=3600, description="Seconds between outbox polls when no commit wakes the relay (live)."
    )
    relay_batch_size: int = Field(default=100, ge=1, le=10_000, description="Deliveries claimed per relay round (live).")
    relay_batch_delay: float = Field(
        default=0.02,
        ge=0,
        le=5,
        description="Seconds the relay waits after a commit wakes it, so that one round takes the events of the commits "
        "that follow (fewer write transactions under load; 0: a round per wake-up) (live).",
    )
    relay_lease: float = Field(
        default=60.0, gt=0, description="Seconds a claimed delivery stays reserved for the worker that claimed it (live)."
    )
    retry_base_delay: float = Field(
        default=1.0, ge=0, description="Seconds before the first retry of a failed delivery; doubles per attempt (live)."
    )
    retry_max_delay: float = Field(default=300.0, ge=0, description="Longest delay between two retries (live).")
    max_attempts: int = Field(default=20, ge=0, description="Attempts before a delivery is marked failed; 0 retries forever (live).")
    retention_hours: float = Field(default=168.0, gt=0, description="Hours a fully delivered event is kept before it is deleted (live).")

    @field_validator("url", "migrations_url", "system_url")
    @classmethod
    def _normalise_url(cls, value: str, info: ValidationInfo) -> str:
        normalised = normalise_url(value) if value.strip() else ""
        main = info.data.get("url", "") if info.field_name != "url" else ""
        if normalised and main and make_url(normalised).get_backend_name() != make_url(main).get_backend_name():
            raise ValueError("must name the same database server kind as storage.url (both PostgreSQL)")
        return normalised


LIVE_KEYS = frozenset(
    {
        "echo",
        "retry_after",
        "auto_upgrade",
        "relay_enabled",
        "relay_poll_interval",
        "relay_batch_size",
        "relay_batch_delay",
        "relay_lease",
        "retry_base_delay",
        "retry_max_delay",
        "max_attempts",
        "retention_hours",
    }
)

SCHEMA = SettingsSchema(model=StorageSettings, live=LIVE_KEYS, guarded=frozenset({"url"}))


def normalise_url(value: str) -> str:
    """Return ``value`` with the async driver this plugin uses; raise ``ValueError`` for other databases."""
    try:
        url = make_url(value.strip())
    except ArgumentError:
        raise ValueError("not a database URL; use sqlite+aiosqlite:///path.db or postgresql://user@host/db") from None
    driver = _SCHEMES.get(url.drivername)
    if driver is None:
        raise ValueError(f"unsupported database '{url.drivername}'; use sqlite+aiosqlite:///path.db or postgresql://user@host/db")
    return url.set(drivername=driver).render_as_string(hide_password=False)


def effective_url(settings: StorageSettings, state_dir: Path) -> URL:
    """The URL to connect to: the configured one, or SQLite in the kernel's state directory."""
    if settings.url:
        return make_url(settings.url)
    return make_url(f"sqlite+aiosqlite:///{state_dir / DEFAULT_SQLITE_FILE}")


def separate_url(value: str, main: URL) -> URL | None:
    """``migrations_url`` or ``system_url`` as a URL when it names another connection than ``main``; None otherwise."""
    if not value:
        return None
    url = make_url(value)
    if url.render_as_string(hide_password=False) == main.render_as_string(hide_password=False):
        return None
    if url.get_backend_name() != main.get_backend_name():
        raise ValueError(
            f"{url.get_backend_name()} URL given next to a {main.get_backend_name()} storage.url; "
            "every storage URL must name the same database"
        )
    return url
