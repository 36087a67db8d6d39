"""The ``[default.lgpd]`` settings section: consent purposes, deadlines, export links and their encryption keys."""

from __future__ import annotations

import base64
import hashlib

from pydantic import BaseModel, ConfigDict, Field, field_validator

from botcriptofy import PluginSettings, SettingsSchema

LEGAL_DEADLINE_DAYS = 15  # LGPD Art. 19 II: a complete answer within 15 days of the request.


class Purpose(BaseModel):
    """One purpose of processing that people consent to, with the policy text version a grant refers to."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str = Field(min_length=1)
    policy_version: str = Field(min_length=1, max_length=32)
    policy_text: str = Field(min_length=1, description="The text people agree to; each grant stores its SHA-256.")
    required: bool = Field(False, description="Needed to provide the service (essential): always on, cannot be revoked.")

    @property
    def policy_hash(self) -> str:
        return hashlib.sha256(self.policy_text.encode()).hexdigest()


DEFAULT_PURPOSES: dict[str, Purpose] = {
    "essential": Purpose(
        description="Running your account: sign-in, security, billing and the records the law obliges us to keep.",
        policy_version="2026-01",
        policy_text="We process your account, security and billing data to provide the service you signed up for (LGPD Art. 7 V).",
        required=True,
    ),
    "marketing_email": Purpose(
        description="News, offers and campaigns by e-mail.",
        policy_version="2026-01",
        policy_text="We send you news and offers by e-mail until you revoke this consent.",
    ),
    "analytics": Purpose(
        description="Usage analytics to improve the product.",
        policy_version="2026-01",
        policy_text="We analyse how you use the platform, in aggregate, to improve it.",
    ),
    "ai_insights": Purpose(
        description="AI agents' insights computed from your trading activity.",
        policy_version="2026-01",
        policy_text="Our AI agents analyse your trading activity to suggest insights to you.",
    ),
    "partner_sharing": Purpose(
        description="Sharing your contact with partners (exchanges, brokers) for their offers.",
        policy_version="2026-01",
        policy_text="We share your name and e-mail with the partners listed in our privacy policy, for their offers.",
    ),
}


def parse_key(entry: str) -> tuple[str, bytes]:
    key_id, sep, encoded = entry.partition(":")
    if not sep or not key_id.strip():
        raise ValueError("an export key entry is 'key_id:base64 of 32 bytes'")
    try:
        raw = base64.b64decode(encoded + "=" * (-len(encoded) % 4), altchars=b"-_")
    except ValueError:
        raise ValueError(f"export key '{key_id}' is not base64") from None
    if len(raw) != 32:
        raise ValueError(f"export key '{key_id}' decodes to {len(raw)} bytes, expected 32")
    return key_id.strip(), raw


class LgpdSettings(PluginSettings):
    """Settings of the lgpd plugin; see the plugin README for each key."""

    purposes: dict[str, Purpose] = Field(default_factory=lambda: dict(DEFAULT_PURPOSES), description="Consent purposes by name (live).")
    deadline_days: int = Field(LEGAL_DEADLINE_DAYS, ge=1, le=LEGAL_DEADLINE_DAYS, description="Days to answer a request (live).")
    reminder_days: int = Field(3, ge=0, le=LEGAL_DEADLINE_DAYS, description="Warn the DPO this many days before a deadline (live).")
    sweep_interval: float = Field(60.0, gt=0, description="Seconds between checks for requests to resume or flag as overdue (live).")
    export_link_ttl: int = Field(86_400, ge=60, le=30 * 86_400, description="Seconds an export's download link works (live).")
    export_retention: int = Field(7 * 86_400, ge=60, description="Seconds an export file is kept before it is deleted (live).")
    export_dir: str = Field("", description="Where encrypted exports are written; empty: <state_dir>/lgpd/exports.")
    export_keys: list[str] = Field(
        default_factory=list,
        description="SECRET. AES-256-GCM keys for exports at rest, 'key_id:base64 of 32 bytes'; the first encrypts, all decrypt. "
        "Empty: a development key under <state_dir>/lgpd (refused in production).",
    )

    @field_validator("purposes")
    @classmethod
    def _purposes(cls, value: dict[str, Purpose]) -> dict[str, Purpose]:
        for name in value:
            if not name.replace("_", "").isalnum() or not name.islower() or len(name) > 64:
                raise ValueError(f"purpose '{name}' must be lower-case letters, digits and underscores (at most 64)")
        return value

    @field_validator("export_keys")
    @classmethod
    def _keys(cls, value: list[str]) -> list[str]:
        for entry in value:
            parse_key(entry)
        return value


LIVE_KEYS = frozenset({"purposes", "deadline_days", "reminder_days", "sweep_interval", "export_link_ttl", "export_retention"})
SCHEMA = SettingsSchema(model=LgpdSettings, live=LIVE_KEYS)
