"""Plans as data: loaded from ``plans.toml`` and validated; limits, features, prices and trials."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from importlib import resources
from typing import Any

from ._money import Money

UNLIMITED = "unlimited"


class Interval(StrEnum):
    """A billing interval, spelled as Stripe spells ``recurring.interval``."""

    month = "month"
    year = "year"


class QuotaKind(StrEnum):
    periodic = "periodic"  # counted per period (day, month) and reset at the next one
    gauge = "gauge"  # a count of things that exist (bots): consuming adds, a negative amount releases


@dataclass(frozen=True, slots=True)
class Quota:
    name: str
    kind: QuotaKind
    period: str | None = None  # "day" or "month" for periodic quotas
    description: str = ""

    def period_key(self, now: datetime | None = None) -> str:
        """The bucket a consumption falls in: ``2026-05-14`` per day, ``2026-05`` per month, ``total`` for gauges."""
        now = now or datetime.now(UTC)
        if self.period == "day":
            return now.strftime("%Y-%m-%d")
        if self.period == "month":
            return now.strftime("%Y-%m")
        return "total"


QUOTAS: dict[str, Quota] = {
    "bots": Quota("bots", QuotaKind.gauge, description="trading bots that exist at once"),
    "strategies": Quota("strategies", QuotaKind.gauge, description="strategies that exist at once"),
    "exchanges": Quota("exchanges", QuotaKind.gauge, description="connected exchange accounts"),
    "orders_per_day": Quota("orders_per_day", QuotaKind.periodic, "day", "orders placed per UTC day"),
    "api_calls_per_month": Quota("api_calls_per_month", QuotaKind.periodic, "month", "API calls per UTC calendar month"),
}
# Limits that are not consumed here: the rate-limit plugin reads them from the entitlements.
RATE_LIMITS = ("api_rate_per_minute", "api_burst")
LIMIT_NAMES = (*QUOTAS, *RATE_LIMITS)


@dataclass(frozen=True, slots=True)
class Plan:
    """One plan: its prices per interval, trial, limits (None = unlimited) and features."""

    code: str
    name: str
    rank: int
    sold: bool
    prices: Mapping[Interval, Money]
    trial_days: int
    limits: Mapping[str, int | None]
    features: frozenset[str]
    default: bool = False
    description: str = ""

    def price(self, interval: Interval | str) -> Money:
        return self.prices[Interval(interval)]

    def limit(self, name: str) -> int | None:
        return self.limits.get(name)

    def lookup_key(self, interval: Interval | str, prefix: str = "botcriptofy") -> str:
        """The Stripe price lookup key: ``botcriptofy_pro_month``."""
        return f"{prefix}_{self.code}_{Interval(interval).value}"

    def product_id(self, prefix: str = "botcriptofy") -> str:
        """The Stripe product id: ``botcriptofy_pro``."""
        return f"{prefix}_{self.code}"


@dataclass(frozen=True)
class Catalog:
    """Every plan, by code, ordered by rank."""

    currency: str
    plans: Mapping[str, Plan] = field(default_factory=dict)

    def __getitem__(self, code: str) -> Plan:
        return self.plans[code]

    def __contains__(self, code: object) -> bool:
        return code in self.plans

    def __iter__(self) -> Any:
        return iter(sorted(self.plans.values(), key=lambda plan: plan.rank))

    @property
    def default(self) -> Plan:
        return next(plan for plan in self.plans.values() if plan.default)

    @property
    def sold(self) -> list[Plan]:
        return [plan for plan in self if plan.sold]

    def lifting_plan(self, current: Plan, quota: str, needed: int) -> Plan | None:
        """The cheapest sold plan ranked above ``current`` whose ``quota`` allows ``needed`` units."""
        for plan in self.sold:
            if plan.rank <= current.rank:
                continue
            limit = plan.limit(quota)
            if limit is None or limit >= needed:
                return plan
        return None


def _limit(value: Any, plan: str, name: str) -> int | None:
    if value == UNLIMITED:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"plans.toml: plans.{plan}.limits.{name} must be a non-negative integer or \"unlimited\", not {value!r}")
    return value


def parse_catalog(document: Mapping[str, Any]) -> Catalog:
    """Validate a plans document (the shape of ``plans.toml``) into a :class:`Catalog`."""
    currency = str(document.get("currency", "BRL")).upper()
    plans: dict[str, Plan] = {}
    for code, raw in dict(document.get("plans", {})).items():
        limits_raw = dict(raw.get("limits", {}))
        unknown = set(limits_raw) - set(LIMIT_NAMES)
        if unknown:
            raise ValueError(f"plans.toml: plans.{code}.limits has unknown limit(s): {', '.join(sorted(unknown))}")
        limits = {name: _limit(limits_raw.get(name, UNLIMITED), code, name) for name in LIMIT_NAMES}
        prices = {Interval(interval): Money.of(amount, currency) for interval, amount in dict(raw.get("price", {})).items()}
        missing = set(Interval) - set(prices)
        if missing:
            raise ValueError(f"plans.toml: plans.{code}.price needs month and year (missing {', '.join(sorted(missing))})")
        plans[code] = Plan(
            code=code,
            name=str(raw["name"]),
            rank=int(raw["rank"]),
            sold=bool(raw.get("sold", False)),
            prices=prices,
            trial_days=int(raw.get("trial_days", 0)),
            limits=limits,
            features=frozenset(raw.get("features", ())),
            default=bool(raw.get("default", False)),
            description=str(raw.get("description", "")),
        )
    defaults = [plan.code for plan in plans.values() if plan.default]
    if len(defaults) != 1:
        raise ValueError(f"plans.toml: exactly one plan must have default = true (found {defaults or 'none'})")
    for plan in plans.values():
        if plan.sold and any(price.amount_minor <= 0 for price in plan.prices.values()):
            raise ValueError(f"plans.toml: sold plan '{plan.code}' must have positive prices")
    return Catalog(currency=currency, plans=plans)


def load_catalog() -> Catalog:
    """Load the packaged ``plans.toml``."""
    text = resources.files(__package__).joinpath("plans.toml").read_text(encoding="utf-8")
    return parse_catalog(tomllib.loads(text))


CATALOG = load_catalog()
