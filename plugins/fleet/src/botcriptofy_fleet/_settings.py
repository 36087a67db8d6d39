"""The ``[fleet]`` settings section."""

from __future__ import annotations

import socket
from typing import Any

from pydantic import Field

from botcriptofy import PluginSettings

LIVE_KEYS = frozenset({"reconcile_interval", "heartbeat_timeout"})


class FleetSettings(PluginSettings):
    """Settings of the fleet plugin. Every key has a default; see the plugin README."""

    enabled: bool = Field(
        default=False,
        description="Fleet mode: the configuration lives in PostgreSQL and every host applies its current version. "
        "Off: this host's settings files are its configuration (single-host mode).",
    )
    host: str = Field(
        default="",
        max_length=200,
        description="This host's name in the fleet's status. Empty means the machine's host name. Set it in settings.local.toml.",
    )
    database_url: str = Field(
        default="",
        description="PostgreSQL URL of the shared configuration. Empty means storage.url (which must then be PostgreSQL).",
    )
    reconcile_interval: float = Field(
        default=5.0,
        gt=0,
        le=3600,
        description="Seconds between two reads of the current version without a notification; also the heartbeat period (live).",
    )
    heartbeat_timeout: float = Field(
        default=30.0,
        gt=0,
        le=86400,
        description="Seconds after which a worker that sent no heartbeat drops out of the fleet's status (live).",
    )


def host_name(settings: FleetSettings) -> str:
    return settings.host or socket.gethostname()


def resolve_dsn(settings: FleetSettings, all_settings: dict[str, Any]) -> str:
    """The asyncpg DSN of the shared configuration; raise ValueError naming the key when it is not PostgreSQL."""
    url = settings.database_url
    key = "fleet.database_url"
    if not url:
        storage = all_settings.get("storage")
        url = str(storage.get("url") or "") if isinstance(storage, dict) else ""
        key = "storage.url"
    scheme, separator, rest = url.partition("://")
    if not separator or scheme.split("+")[0] not in ("postgresql", "postgres"):
        shown = scheme or "empty (SQLite)"
        raise ValueError(
            f"fleet mode needs PostgreSQL: {key} is {shown}; set storage.url (or fleet.database_url) to a postgresql:// URL, "
            "or turn fleet mode off (fleet.enabled = false)"
        )
    return f"postgresql://{rest}"
