"""Settings compiled for the request path: keys, plans, route costs, client addresses, penalties."""

from __future__ import annotations

import ipaddress
import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.routing import compile_path

from ._core import GCRA, QUOTA, US, Check, PenaltyParams, interval_of
from ._settings import PlanLimits, RateLimitSettings, parse_route_key

if TYPE_CHECKING:
    from botcriptofy import Actor, Entitlements, Kernel

log = logging.getLogger("botcriptofy.ratelimit")

QUOTA_NAME = "api_calls_per_month"
MINUTE = 60.0


@dataclass(frozen=True, slots=True)
class PlanSpec:
    """A plan's API limits as the backends need them; 0 means unlimited."""

    name: str
    rate_per_minute: int
    burst: int
    calls_per_month: int

    @property
    def interval(self) -> int:
        return interval_of(self.rate_per_minute, MINUTE) if self.rate_per_minute else 0

    @classmethod
    def of(cls, name: str, limits: PlanLimits) -> PlanSpec:
        return cls(name, limits.rate_per_minute, limits.burst, limits.calls_per_month)


@dataclass(frozen=True, slots=True)
class Subject:
    """Who a request's plan limit counts against: a tenant, an actor without tenant, or an address."""

    label: str
    tenant_id: str | None
    plan_key: str
    quota_key: str | None
    penalty_key: str


class Policy:
    """One generation's rate-limit settings, compiled once and read by every request."""

    def __init__(self, settings: RateLimitSettings) -> None:
        self.settings = settings
        self.prefix = settings.key_prefix
        self.enforce = settings.enforce
        guard = settings.flood_guard
        self.flood_interval = interval_of(guard.rate_per_minute, MINUTE) if guard.enabled else 0
        self.flood_burst = guard.burst
        self.flood_rate = guard.rate_per_minute
        self.ipv6_prefix = guard.ipv6_prefix
        self.plans = {name: PlanSpec.of(name, limits) for name, limits in settings.plans.items()}
        self.anonymous = PlanSpec.of("anonymous", settings.anonymous)
        self.default_plan = settings.default_plan
        self.upgrade_order = list(settings.upgrade_order)
        self.exempt = frozenset(settings.exempt_paths)
        self.exact_costs: dict[tuple[str | None, str], int] = {}
        self.pattern_costs: list[tuple[str | None, re.Pattern[str], int]] = []
        for template, cost in settings.route_costs.items():
            method, path = parse_route_key(template)
            if "{" in path:
                regex, _, _ = compile_path(path)
                self.pattern_costs.append((method, re.compile(regex.pattern, re.IGNORECASE), cost))
            else:
                self.exact_costs[(method, path.lower())] = cost
        self.trusted = [ipaddress.ip_network(entry, strict=False) for entry in settings.trusted_proxies]
        self.entitlements_ttl = settings.entitlements_ttl
        pen = settings.penalty
        self.weights: Mapping[int, float] = {s: w for s, w in pen.weights.items() if w > 0} if pen.enabled else {}
        self.penalty = PenaltyParams(
            enabled=pen.enabled,
            half_life=max(1, round(pen.half_life * US)),
            threshold=pen.threshold,
            min_factor=pen.min_factor,
            max_score=pen.max_score,
            deny_weight=pen.weights.get(429, 0.0),
        )
        self._entitlements: dict[str, tuple[float, PlanSpec | None]] = {}

    # -- request facts ----------------------------------------------------------------------

    def cost_for(self, method: str, path: str) -> int:
        if not self.exact_costs and not self.pattern_costs:
            return 1
        lowered = path.lower()
        for key in ((method, lowered), (None, lowered)):
            cost = self.exact_costs.get(key)
            if cost is not None:
                return cost
        for wanted, regex, cost in self.pattern_costs:
            if (wanted is None or wanted == method) and regex.match(path):
                return cost
        return 1

    def client_ip(self, scope: Mapping[str, Any]) -> str:
        client = scope.get("client")
        host: str = client[0] if client else "unknown"
        if self.trusted and self._is_trusted(host):
            forwarded = [v.decode("latin-1") for k, v in scope.get("headers", ()) if k == b"x-forwarded-for"]
            hops = [hop.strip() for line in forwarded for hop in line.split(",") if hop.strip()]
            for hop in reversed(hops):
                if not self._is_trusted(hop):
                    host = hop
                    break
        if ":" in host:
            try:
                network = ipaddress.ip_network(f"{host}/{self.ipv6_prefix}", strict=False)
                host = str(network.network_address) + f"/{self.ipv6_prefix}"
            except ValueError:
                pass
        return host

    def _is_trusted(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in self.trusted)

    # -- checks -----------------------------------------------------------------------------

    def flood_check(self, ip: str) -> Check | None:
        if not self.flood_interval:
            return None
        return Check(GCRA, f"{self.prefix}ip:{ip}", self.flood_interval, self.flood_burst, 1, f"{self.prefix}p:ip:{ip}", "flood_guard")

    def subject_of(self, actor: Actor | None, ip: str) -> Subject:
        p = self.prefix
        if actor is None:
            return Subject(f"address {ip}", None, f"{p}s:ip:{ip}", None, f"{p}p:ip:{ip}")
        if actor.tenant_id:
            tenant = actor.tenant_id
            return Subject(f"tenant {tenant}", tenant, f"{p}s:t:{tenant}", f"{p}q:{tenant}", f"{p}p:t:{tenant}")
        return Subject(f"{actor.kind} {actor.id}", None, f"{p}s:a:{actor.id}", None, f"{p}p:a:{actor.id}")

    def subject_checks(self, subject: Subject, plan: PlanSpec, cost: int) -> list[Check]:
        checks = []
        if plan.rate_per_minute:
            checks.append(Check(GCRA, subject.plan_key, plan.interval, plan.burst, cost, subject.penalty_key, "plan"))
        if plan.calls_per_month and subject.quota_key is not None:
            checks.append(Check(QUOTA, subject.quota_key, 0, plan.calls_per_month, 1, None, "quota"))
        return checks

    # -- plans ------------------------------------------------------------------------------

    def plan_named(self, name: str | None) -> PlanSpec:
        return self.plans.get(name or self.default_plan) or self.plans[self.default_plan]

    def remembered_plan(self, actor: Actor | None) -> PlanSpec | None:
        """:meth:`plan_for` when it needs no await: no tenant, or the tenant's entitlements still remembered; else None."""
        if actor is None:
            return self.anonymous
        tenant = actor.tenant_id
        if not tenant:
            return self.plan_named(actor.attributes.get("plan") if actor.attributes else None)
        cached = self._entitlements.get(tenant)
        if cached is not None and cached[0] > time.monotonic():
            spec = cached[1]
            return spec if spec is not None else self.plan_named(actor.attributes.get("plan") if actor.attributes else None)
        return None

    async def plan_for(self, kernel: Kernel, actor: Actor | None) -> PlanSpec:
        """The caller's plan limits: the billing plugin's entitlements when it knows the tenant, else settings."""
        remembered = self.remembered_plan(actor)
        if remembered is not None:
            return remembered
        assert actor is not None and actor.tenant_id  # remembered_plan answers for the others
        tenant = actor.tenant_id
        try:
            found = await kernel.entitlements(tenant)
        except Exception:
            log.exception("entitlements_for failed for tenant %s; using the plan from settings", tenant)
            found = None
        spec = self.from_entitlements(found) if found is not None else None
        if self.entitlements_ttl > 0:
            if len(self._entitlements) > 50_000:
                self._entitlements.clear()
            self._entitlements[tenant] = (time.monotonic() + self.entitlements_ttl, spec)
        return spec if spec is not None else self.plan_named(actor.attributes.get("plan") if actor.attributes else None)

    def from_entitlements(self, entitlements: Entitlements) -> PlanSpec:
        base = self.plan_named(entitlements.plan)
        limits = entitlements.limits

        def pick(key: str, default: int) -> int:
            if key not in limits:
                return default
            value = limits[key]
            return 0 if value is None else int(value)

        rate = pick("api_rate_per_minute", base.rate_per_minute)
        burst = pick("api_burst", base.burst) or base.burst
        return PlanSpec(entitlements.plan, rate, max(1, burst), pick("api_calls_per_month", base.calls_per_month))

    def upgrade_for(self, plan: str, used_limit: int) -> str | None:
        """The next plan in ``upgrade_order`` whose monthly calls exceed ``used_limit``."""
        order = self.upgrade_order
        start = order.index(plan) + 1 if plan in order else 0
        for name in order[start:]:
            monthly = self.plans[name].calls_per_month
            if monthly == 0 or monthly > used_limit:
                return name
        return None
