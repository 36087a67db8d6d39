"""The ``[default.webhooks]`` settings section."""

from __future__ import annotations

from pydantic import Field

from botcriptofy import PluginSettings, SettingsSchema


class WebhooksSettings(PluginSettings):
    allow_private_targets: bool = Field(False, description="Allow loopback, private, link-local and metadata addresses (development only).")
    max_endpoints: int = Field(10, ge=1, le=100, description="Endpoints per tenant.")
    timeout: float = Field(10.0, gt=0, description="Seconds for one delivery attempt.")
    retry_base: float = Field(30.0, gt=0, description="Seconds before the first retry; doubles per attempt.")
    retry_max: float = Field(3600.0, gt=0, description="Longest wait between attempts.")
    give_up_after: float = Field(
        86400.0, gt=0, description="Seconds of failing after which the endpoint is disabled and its owner notified."
    )
    poll_interval: float = Field(1.0, gt=0, description="Seconds between sender rounds when idle.")


SCHEMA = SettingsSchema(
    model=WebhooksSettings, live=frozenset({"allow_private_targets", "timeout", "retry_base", "retry_max", "give_up_after"})
)
