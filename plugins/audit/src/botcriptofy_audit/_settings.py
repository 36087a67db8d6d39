"""The ``[default.audit]`` settings section."""

from __future__ import annotations

import base64

from pydantic import Field, field_validator

from botcriptofy import PluginSettings, SettingsSchema

# Marco Civil da Internet (Law 12,965/2014, Art. 15): application access records for 6 months.
ACCESS_LOG_MINIMUM_DAYS = 183
# Tax and accounting records (CTN Art. 173/174): 5 years; billing and privacy entries keep them.
FINANCIAL_MINIMUM_DAYS = 1827
FINANCIAL_PREFIXES = ("billing.", "privacy.")


def parse_key(entry: str, *, size: int, what: str) -> tuple[str, bytes]:
    """Split ``key_id:base64`` into the id and ``size`` raw bytes; raise ``ValueError`` naming what is wrong."""
    key_id, sep, encoded = entry.partition(":")
    if not sep or not key_id.strip() or ":" in encoded:
        raise ValueError(f"a {what} entry is 'key_id:base64 of {size} bytes', not '{key_id[:8]}...'")
    try:
        raw = base64.b64decode(encoded + "=" * (-len(encoded) % 4), altchars=b"-_", validate=False)
    except ValueError:
        raise ValueError(f"{what} '{key_id}' is not base64") from None
    if len(raw) != size:
        raise ValueError(f"{what} '{key_id}' decodes to {len(raw)} bytes, expected {size}")
    return key_id.strip(), raw


class AuditSettings(PluginSettings):
    """Settings of the audit plugin; see the plugin README for each key."""

    signing_keys: list[str] = Field(
        default_factory=list,
        description="SECRET. Ed25519 private keys for checkpoints, 'key_id:base64 of the 32-byte seed'; the first signs, "
        "all verify. Empty: a development key under <state_dir>/audit (refused in production).",
    )
    verify_keys: list[str] = Field(
        default_factory=list,
        description="Public keys of retired signing keys, 'key_id:base64 of 32 bytes', so their checkpoints still verify (live).",
    )
    checkpoint_every: int = Field(100, ge=1, le=1_000_000, description="Sign a checkpoint after this many entries of one chain (live).")
    checkpoint_interval: float = Field(
        300.0, gt=0, description="Seconds after which the next entry of a chain also signs a checkpoint (live)."
    )
    retention_days: int = Field(
        FINANCIAL_MINIMUM_DAYS,
        ge=ACCESS_LOG_MINIMUM_DAYS,
        description="Days entries are kept before `botcriptofy audit purge` may remove them; billing and privacy entries are kept "
        f"at least {FINANCIAL_MINIMUM_DAYS} days whatever this says (live).",
    )
    page_size: int = Field(100, ge=1, le=1000, description="Default page size of GET /v1/audit (live).")

    @field_validator("signing_keys")
    @classmethod
    def _signing(cls, value: list[str]) -> list[str]:
        seen: set[str] = set()
        for entry in value:
            key_id, _ = parse_key(entry, size=32, what="signing key")
            if key_id in seen:
                raise ValueError(f"key id '{key_id}' appears twice")
            seen.add(key_id)
        return value

    @field_validator("verify_keys")
    @classmethod
    def _verify(cls, value: list[str]) -> list[str]:
        for entry in value:
            parse_key(entry, size=32, what="verify key")
        return value


LIVE_KEYS = frozenset({"verify_keys", "checkpoint_every", "checkpoint_interval", "retention_days", "page_size"})
SCHEMA = SettingsSchema(model=AuditSettings, live=LIVE_KEYS)


def minimum_days(action: str, retention_days: int) -> int:
    """Days an entry for ``action`` must be kept: the setting, raised to the legal minimum of its kind."""
    if action.startswith(FINANCIAL_PREFIXES):
        return max(retention_days, FINANCIAL_MINIMUM_DAYS)
    return max(retention_days, ACCESS_LOG_MINIMUM_DAYS)
