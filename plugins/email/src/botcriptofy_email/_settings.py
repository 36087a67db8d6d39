"""The ``[default.email]`` settings section."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from botcriptofy import PluginSettings, SettingsSchema


class EmailSettings(PluginSettings):
    host: str = Field("", description="SMTP server. Empty: the e-mail channel is off.")
    port: int = Field(587, ge=1, le=65535)
    security: Literal["starttls", "tls", "none"] = Field(
        "starttls", description="STARTTLS (587), implicit TLS (465) or none (local relays only)."
    )
    username: str = Field("", description="SMTP login (empty: no authentication).")
    password: str = Field("", description="SECRET. SMTP password.")
    verify_certificates: bool = Field(True, description="Check the server's certificate (never turn off in production).")
    from_address: str = Field("BotCriptoFy <no-reply@botcriptofy.invalid>", min_length=3, description="The From header.")
    reply_to: str = Field("", description="The Reply-To header (empty: none).")
    unsubscribe_url: str = Field("", description="https URL (or mailto:) for List-Unsubscribe on non-critical categories (empty: none).")
    always_send: list[str] = Field(
        default_factory=lambda: ["auth.*", "security.*"],
        description="Category patterns that are never unsubscribable (plus severity critical).",
    )
    timeout: float = Field(10.0, gt=0, description="Seconds for the whole SMTP exchange.")


LIVE = frozenset({"from_address", "reply_to", "unsubscribe_url", "always_send", "timeout"})
SCHEMA = SettingsSchema(model=EmailSettings, live=LIVE)
