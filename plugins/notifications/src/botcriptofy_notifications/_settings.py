"""The ``[default.notifications]`` settings section."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from botcriptofy import PluginSettings, SettingsSchema


class NotificationsSettings(PluginSettings):
    default_locale: Literal["pt-BR", "en"] = Field("pt-BR", description="Locale of people without a preference, and of group chats.")
    dedup_window: float = Field(3600.0, ge=0, description="Seconds within which a repeated dedup_key reaches each person once.")
    flood_cap: int = Field(
        20, ge=1, description="Deliveries per channel and person (or group) within flood_window before the rest fold into a digest."
    )
    flood_window: float = Field(
        60.0, gt=0, description="Seconds of the flood cap's window; folded deliveries go out as one digest after it."
    )
    max_attempts: int = Field(8, ge=1, le=50, description="Attempts before a delivery becomes a dead letter.")
    retry_base: float = Field(30.0, gt=0, description="Seconds before the first retry; doubles with each attempt.")
    retry_max: float = Field(3600.0, gt=0, description="Longest wait between two attempts, seconds.")
    poll_interval: float = Field(1.0, gt=0, description="Seconds between two rounds of the dispatcher.")
    batch_size: int = Field(200, ge=1, le=5000, description="Deliveries claimed per round.")
    lease_ttl: float = Field(15.0, gt=0, description="Seconds the dispatching worker's lease lasts; another worker takes over after it.")
    concurrency: int = Field(16, ge=1, le=256, description="Channels and people served at once by the dispatcher (each in order).")
    bridge_events: bool = Field(
        True,
        description="Turn billing's and auth's events (payment failed, quotas, trial ending, lockouts, new device) into notifications.",
    )
    security_department: str = Field("security", description="Department told about account lockouts and token reuse.")


LIVE = frozenset(
    {
        "default_locale",
        "dedup_window",
        "flood_cap",
        "flood_window",
        "max_attempts",
        "retry_base",
        "retry_max",
        "batch_size",
        "concurrency",
        "bridge_events",
        "security_department",
    }
)
SCHEMA = SettingsSchema(model=NotificationsSettings, live=LIVE)
