"""The ``[cache]`` settings section: backend, Redis connection, TTLs and per-namespace write policies."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator

from botcriptofy import PluginSettings

MIN_KEY_LENGTH = 32
Backend = Literal["memory", "redis", "two-layer"]
WritePolicy = Literal["write-through", "write-around", "write-behind"]


class NamespaceSettings(PluginSettings):
    """One namespace's overrides (``[default.cache.namespaces.<name>]``); unset keys follow the section's."""

    ttl: float | None = Field(None, ge=0, description="Seconds an entry lives; 0: no expiry; unset: cache.default_ttl.")
    ttl_jitter: float | None = Field(None, ge=0, le=0.5, description="Fraction of the TTL taken off at random; unset: cache.ttl_jitter.")
    write_policy: WritePolicy = Field("write-through", description="What cache.write() does with the system of record.")
    local: bool = Field(True, description="Keep entries of this namespace in the in-process layer (two-layer backend).")


class CacheSettings(PluginSettings):
    """The ``[cache]`` section. Every key has a default; the embedded default needs no Redis."""

    backend: Backend = Field("memory", description="memory (in-process LRU), redis, or two-layer (in-process in front of Redis).")
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="Redis server for the redis and two-layer backends.")
    prefix: str = Field("bcf:cache:", min_length=1, description="Prefix of every Redis key and channel the cache uses.")
    redis_timeout: float = Field(0.25, gt=0, le=30, description="Seconds a Redis command may take before Redis counts as down.")
    serializer: Literal["json", "pickle"] = Field(
        "json", description="How values are encoded in Redis: json (data only), or pickle (any object; needs signing_key)."
    )
    signing_key: SecretStr = Field(
        SecretStr(""),
        validate_default=True,
        description="HMAC-SHA256 key (at least 32 characters) signing every Redis entry; unsigned or wrongly signed entries are refused. "
        "Required by serializer = 'pickle'. A secret: environment or .secrets.toml.",
    )
    previous_signing_keys: list[SecretStr] = Field(
        default_factory=list, description="Earlier signing keys still accepted when reading, while a key is being rotated."
    )
    memory_max_entries: int = Field(10_000, ge=1, description="Bound of the in-process LRU layer (entries).")
    default_ttl: float = Field(300.0, ge=0, description="Seconds an entry lives unless the call or namespace says; 0: no expiry.")
    ttl_jitter: float = Field(0.1, ge=0, le=0.5, description="Fraction of the TTL taken off at random: entries set together expire apart.")
    local_ttl: float = Field(30.0, gt=0, description="Longest life of an in-process copy of a Redis entry (two-layer): a staleness bound.")
    lock_timeout: float = Field(10.0, gt=0, description="Seconds a cross-process loader lock lives; the longest wait for another loader.")
    reconnect_interval: float = Field(1.0, gt=0, le=60, description="Seconds between Redis probes while it is down.")
    write_behind_batch: int = Field(100, ge=1, le=10_000, description="Entries the flusher takes from a stream at a time.")
    write_behind_block: float = Field(0.2, gt=0, le=5, description="Seconds the flusher waits for new entries in one read.")
    write_behind_max_backlog: int = Field(
        10_000, ge=1, description="Pending writes per namespace past which cache.write() writes synchronously (bounds the lag)."
    )
    write_behind_claim_idle: float = Field(30.0, gt=0, description="Seconds before another worker takes a dead worker's pending writes.")
    write_behind_max_attempts: int = Field(10, ge=1, description="Deliveries of a failing write before it moves to the dead-letter stream.")
    namespaces: dict[str, NamespaceSettings] = Field(default_factory=dict, description="Per-namespace TTL, jitter and write policy.")

    @field_validator("signing_key")
    @classmethod
    def _signing_key(cls, value: SecretStr, info: ValidationInfo) -> SecretStr:
        secret = value.get_secret_value()
        if secret and len(secret) < MIN_KEY_LENGTH:
            raise ValueError(f"a signing key must be at least {MIN_KEY_LENGTH} characters long (got {len(secret)})")
        if not secret and info.data.get("serializer") == "pickle":
            raise ValueError(
                "serializer = 'pickle' needs a signing_key (at least 32 random characters, from BOTCRIPTOFY_CACHE__SIGNING_KEY or "
                "settings/.secrets.toml): an unsigned pickle lets anyone who can write to Redis run code in every worker"
            )
        return value

    @field_validator("previous_signing_keys")
    @classmethod
    def _previous_keys(cls, value: list[SecretStr]) -> list[SecretStr]:
        for index, key in enumerate(value):
            if len(key.get_secret_value()) < MIN_KEY_LENGTH:
                raise ValueError(f"entry {index}: a signing key must be at least {MIN_KEY_LENGTH} characters long")
        return value

    @field_validator("namespaces")
    @classmethod
    def _names(cls, value: dict[str, NamespaceSettings]) -> dict[str, NamespaceSettings]:
        for name in value:
            if not name or ":" in name:
                raise ValueError(f"namespace names must be non-empty and contain no ':' (got {name!r})")
        return value


# Keys applied by ``settings_changed`` without restarting the plugin. Changing any other key
# (backend, redis_url, prefix, redis_timeout) starts a new cache instance.
LIVE_KEYS = frozenset(
    {
        "serializer",
        "signing_key",
        "previous_signing_keys",
        "memory_max_entries",
        "default_ttl",
        "ttl_jitter",
        "local_ttl",
        "lock_timeout",
        "reconnect_interval",
        "write_behind_batch",
        "write_behind_block",
        "write_behind_max_backlog",
        "write_behind_claim_idle",
        "write_behind_max_attempts",
        "namespaces",
    }
)
