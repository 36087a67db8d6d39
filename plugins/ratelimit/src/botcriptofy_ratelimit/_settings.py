"""The ``[ratelimit]`` settings section: backend, flood guard, plans, route costs, penalties, outage mode."""

from __future__ import annotations

import ipaddress
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator

from botcriptofy import PluginSettings

# Liveness, readiness and metrics: load balancers and scrapers call them often from few addresses.
PROBE_PATHS = ("/-/health", "/-/ready", "/metrics")
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"})

# SPEC section 5: API rate (requests per minute, burst) and API calls per month of each plan.
SPEC_PLANS: dict[str, dict[str, int]] = {
    "free": {"rate_per_minute": 30, "burst": 10, "calls_per_month": 1_000},
    "pro": {"rate_per_minute": 300, "burst": 60, "calls_per_month": 100_000},
    "enterprise": {"rate_per_minute": 3_000, "burst": 600, "calls_per_month": 10_000_000},
    "internal": {"rate_per_minute": 300, "burst": 60, "calls_per_month": 500_000},
}


class PlanLimits(PluginSettings):
    """One plan's API limits. ``0`` means no limit (TOML has no null)."""

    rate_per_minute: int = Field(60, ge=0, description="Sustained requests per minute; 0 = unlimited.")
    burst: int = Field(30, ge=1, description="Requests that may be made at once (the bucket size).")
    calls_per_month: int = Field(0, ge=0, description="API calls per calendar month (UTC); 0 = unlimited.")


class FloodGuard(PluginSettings):
    """The per-IP limit checked before any authentication work."""

    enabled: bool = True
    rate_per_minute: int = Field(6_000, ge=1, description="Sustained requests per minute from one address.")
    burst: int = Field(1_200, ge=1, description="Requests one address may make at once.")
    ipv6_prefix: int = Field(64, ge=32, le=128, description="IPv6 clients are grouped by this prefix length.")


class Penalty(PluginSettings):
    """Adaptive penalties: bursts of error responses raise a subject's score, which decays exponentially."""

    enabled: bool = True
    half_life: float = Field(120.0, gt=0, description="Seconds for a score to decay to half.")
    threshold: float = Field(20.0, gt=0, description="Score above which the subject's limits tighten (by threshold/score).")
    min_factor: float = Field(0.1, gt=0, le=1, description="The tightest a penalty makes a limit (fraction of the configured one).")
    max_score: float = Field(1_000.0, gt=0, description="Scores are capped here, which bounds how long a penalty lasts.")
    weights: dict[int, float] = Field(
        default_factory=lambda: {401: 1.0, 403: 1.0, 404: 1.0, 429: 0.5},
        description="Score added per response status; 429 also applies to requests this plugin refuses.",
    )

    @field_validator("weights")
    @classmethod
    def _statuses(cls, value: dict[int, float]) -> dict[int, float]:
        for status, weight in value.items():
            if not 100 <= status <= 599:
                raise ValueError(f"{status} is not an HTTP status")
            if weight < 0:
                raise ValueError(f"the weight of {status} must not be negative")
        return value


class RateLimitSettings(PluginSettings):
    """The ``[default.ratelimit]`` section. Every key has a default; see the plugin's README for each."""

    backend: Literal["memory", "redis"] = Field(
        "memory", description="Where limits are kept: this process, or Redis (shared by every worker)."
    )
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="Redis server for backend = 'redis'.")
    key_prefix: str = Field("bcf:rl:", min_length=1, description="Prefix of every Redis key this plugin writes.")
    redis_timeout: float = Field(0.5, gt=0, description="Seconds to wait for Redis before treating it as down.")
    redis_max_connections: int = Field(64, ge=1, description="Connections in the Redis pool.")
    outage_mode: Literal["fallback", "closed"] = Field(
        "fallback", description="While Redis is down: limit with a local in-process limiter, or refuse requests with 503."
    )
    recovery_interval: float = Field(1.0, gt=0, description="Seconds between attempts to reach Redis again while it is down.")
    fallback_scale: float = Field(1.0, gt=0, le=1, description="Fraction of each rate limit the local fallback allows per process.")
    enforce: bool = Field(True, description="False: compute limits and send headers but never refuse (observe mode).")
    flood_guard: FloodGuard = FloodGuard()
    anonymous: PlanLimits = Field(
        default_factory=lambda: PlanLimits(rate_per_minute=60, burst=30, calls_per_month=0),
        description="Limits of unauthenticated callers, per address.",
    )
    plans: dict[str, PlanLimits] = Field(
        default_factory=lambda: {name: PlanLimits(**values) for name, values in SPEC_PLANS.items()},
        description="Limits per plan name, used when the billing plugin's entitlements do not give them.",
    )
    default_plan: str = Field("free", description="The plan of a caller whose plan nobody knows.")
    upgrade_order: list[str] = Field(
        default_factory=lambda: ["free", "pro", "enterprise"], description="Plans in upgrade order, to name the plan that lifts a quota."
    )
    route_costs: dict[str, int] = Field(
        default_factory=dict, description="'METHOD /template' or '/template' -> tokens one request costs against the plan rate."
    )
    exempt_paths: list[str] = Field(
        default_factory=lambda: list(PROBE_PATHS),
        description="Paths never limited (no headers, no penalties); by default the probes. [] limits them too.",
    )
    trusted_proxies: list[str] = Field(default_factory=list, description="Proxy addresses or networks whose X-Forwarded-For is believed.")
    entitlements_ttl: float = Field(30.0, ge=0, description="Seconds a tenant's entitlements are cached in process; 0 = ask every time.")
    penalty: Penalty = Penalty()

    @field_validator("plans", mode="before")
    @classmethod
    def _merge_plans(cls, value: Any) -> Any:
        """A plan named in settings keeps its SPEC defaults for the keys it does not set; unnamed plans stay."""
        if not isinstance(value, dict):
            return value
        merged: dict[str, Any] = {name: dict(values) for name, values in SPEC_PLANS.items()}
        for name, given in value.items():
            if isinstance(given, PlanLimits):
                given = given.model_dump()
            if isinstance(given, dict) and name in merged:
                merged[name] = {**merged[name], **given}
            else:
                merged[name] = given
        return merged

    @field_validator("route_costs")
    @classmethod
    def _route_costs(cls, value: dict[str, int]) -> dict[str, int]:
        for template, cost in value.items():
            parse_route_key(template)
            if cost < 0:
                raise ValueError(f"the cost of '{template}' must not be negative")
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies(cls, value: list[str]) -> list[str]:
        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"'{entry}' is not an IP address or network") from None
        return value

    @field_validator("exempt_paths")
    @classmethod
    def _paths(cls, value: list[str]) -> list[str]:
        for path in value:
            if not path.startswith("/"):
                raise ValueError(f"'{path}' must start with '/'")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str) -> str:
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        return value

    @field_validator("default_plan")
    @classmethod
    def _default_plan(cls, value: str, info: ValidationInfo) -> str:
        plans = info.data.get("plans")
        if plans is not None and value not in plans:
            raise ValueError(f"'{value}' is not one of the plans ({', '.join(sorted(plans))})")
        return value

    @field_validator("upgrade_order")
    @classmethod
    def _upgrade_order(cls, value: list[str], info: ValidationInfo) -> list[str]:
        plans = info.data.get("plans")
        for name in value:
            if plans is not None and name not in plans:
                raise ValueError(f"'{name}' is not one of the plans ({', '.join(sorted(plans))})")
        return value


# Keys that take effect without restarting the plugin; the others reopen the backend.
LIVE_KEYS = frozenset(RateLimitSettings.model_fields) - {"backend", "redis_url", "key_prefix", "redis_timeout", "redis_max_connections"}


def parse_route_key(text: str) -> tuple[str | None, str]:
    """Split ``'POST /v1/auth/login'`` into ``('POST', '/v1/auth/login')``; ``'/x'`` gives ``(None, '/x')``."""
    parts = text.strip().split()
    if len(parts) == 1:
        method, path = None, parts[0]
    elif len(parts) == 2:
        method, path = parts[0].upper(), parts[1]
        if method not in HTTP_METHODS and method != "*":
            raise ValueError(f"'{text}': '{parts[0]}' is not an HTTP method")
        if method == "*":
            method = None
    else:
        raise ValueError(f"'{text}' must be '/path/{{param}}' or 'METHOD /path/{{param}}'")
    if not path.startswith("/"):
        raise ValueError(f"'{text}': the path must start with '/'")
    return method, path
