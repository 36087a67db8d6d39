"""The limiting arithmetic shared by every backend: GCRA, monthly quotas and decaying penalties.

Times are integer microseconds so that a boundary is exact: ``limit`` requests are admitted, never
``limit - 1`` because of floating-point drift. :class:`MemoryStore` is the in-process twin of the
Lua script in :mod:`._script`; a test runs both on the same cases.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

GCRA = "g"
QUOTA = "q"
NEVER = -1
US = 1_000_000


@dataclass(slots=True)
class Check:
    """One limit to check: a GCRA bucket (``interval`` µs per token, ``capacity`` = burst) or a monthly quota."""

    kind: str
    key: str
    interval: int
    capacity: int
    cost: int = 1
    penalty: str | None = None
    name: str = ""


@dataclass(slots=True)
class Outcome:
    """The result of one check. Times in µs; ``retry_after`` is ``NEVER`` (-1) when the request was admitted."""

    allowed: bool
    limit: int
    remaining: int
    reset_after: int
    retry_after: int
    factor: int = 1000
    crossed: bool = False


@dataclass(slots=True)
class Verdict:
    """The outcome of every check of one hit; nothing was consumed unless ``allowed``."""

    allowed: bool
    outcomes: list[Outcome]
    source: str


@dataclass(frozen=True, slots=True)
class PenaltyParams:
    """Penalty parameters in the units the backends use (µs, scores)."""

    enabled: bool = False
    half_life: int = 120 * US
    threshold: float = 20.0
    min_factor: float = 0.1
    max_score: float = 1000.0
    deny_weight: float = 0.0

    def arg(self) -> str:
        return f"{self.half_life} {self.threshold!r} {self.min_factor!r} {self.max_score!r} {self.deny_weight!r}"


NO_PENALTY = PenaltyParams()


def interval_of(limit: int, period: float) -> int:
    """Microseconds between two tokens of ``limit`` per ``period`` seconds (at least 1)."""
    return max(1, round(period * US / limit))


def month_window(now_us: int) -> tuple[int, int, int]:
    """Return ``(month id, start µs, end µs)`` of the UTC calendar month containing ``now_us``."""
    moment = datetime.fromtimestamp(now_us // US, UTC)
    year, month = moment.year, moment.month
    start = int(datetime(year, month, 1, tzinfo=UTC).timestamp()) * US
    following = (year + 1, 1) if month == 12 else (year, month + 1)
    end = int(datetime(*following, 1, tzinfo=UTC).timestamp()) * US
    return year * 12 + month - 1, start, end


def penalty_factor(score: float, params: PenaltyParams) -> float:
    if score <= params.threshold:
        return 1.0
    return max(params.min_factor, params.threshold / score)


def tightened(interval: int, capacity: int, factor: float) -> tuple[int, int]:
    """Scale a GCRA limit by ``factor`` (< 1 slows the rate and shrinks the burst), as the Lua script does."""
    return math.floor(interval / factor + 0.5), max(1, math.floor(capacity * factor))


class MemoryStore:
    """GCRA, quotas and penalties in this process's memory: atomic because nothing in it awaits.

    Used as the ``memory`` backend and as the local fallback while Redis is down. ``seed`` (fallback
    only) gives the last quota usage seen in Redis; ``deltas`` then records what was consumed
    locally so it can be added to Redis when it is back.
    """

    SWEEP_EVERY = 4096

    def __init__(self, clock: Callable[[], int] | None = None, *, scale: float = 1.0) -> None:
        self.clock = clock or (lambda: time.time_ns() // 1000)
        self.scale = scale
        self.tat: dict[str, int] = {}
        self.quota: dict[str, tuple[int, int]] = {}
        self.penalties: dict[str, tuple[float, int]] = {}
        self.seed: Callable[[str, int], int | None] | None = None
        self.deltas: dict[str, tuple[int, int]] | None = None
        self._ops = 0
        self._month: tuple[int, int, int] = (0, 0, 0)

    def __len__(self) -> int:
        return len(self.tat) + len(self.quota) + len(self.penalties)

    # -- penalties --------------------------------------------------------------------------

    def score(self, key: str, half_life: int, now: int) -> float:
        found = self.penalties.get(key)
        if found is None:
            return 0.0
        score, stamp = found
        if now > stamp:
            score *= 0.5 ** ((now - stamp) / half_life)
        return score

    def _bump(self, key: str, score: float, add: float, params: PenaltyParams, now: int) -> bool:
        new = min(score + add, params.max_score)
        self.penalties[key] = (new, now)
        return score <= params.threshold < new

    def penalize(self, keys: Iterable[str], weight: float, params: PenaltyParams) -> list[bool]:
        now = self.clock()
        return [self._bump(key, self.score(key, params.half_life, now), weight, params, now) for key in keys]

    # -- limits -----------------------------------------------------------------------------

    def _window(self, now: int) -> tuple[int, int, int]:
        month = self._month
        if not month[1] <= now < month[2]:
            month = self._month = month_window(now)
        return month

    def hit(self, checks: list[Check], params: PenaltyParams = NO_PENALTY) -> Verdict:
        now = self.clock()
        self._ops += 1
        if self._ops % self.SWEEP_EVERY == 0:
            self.sweep(now, params)
        outcomes: list[Outcome] = []
        writes: list[tuple[Check, int]] = []
        allowed = True
        for check in checks:
            if check.kind == GCRA:
                interval, capacity, permille = check.interval, check.capacity, 1000
                if self.scale != 1.0:
                    interval, capacity = tightened(interval, capacity, self.scale)
                base_interval, base_capacity = interval, capacity
                if params.enabled and check.penalty is not None:
                    factor = penalty_factor(self.score(check.penalty, params.half_life, now), params)
                    if factor < 1.0:
                        interval, capacity = tightened(interval, capacity, factor)
                        permille = math.floor(factor * 1000)
                tat = self.tat.get(check.key, now)
                if tat < now:
                    tat = now
                tolerance = interval * capacity
                new_tat = tat + check.cost * interval
                diff = now - (new_tat - tolerance)
                if diff < 0:
                    allowed = False
                    retry = NEVER if check.cost * interval > tolerance else -diff
                    outcome = Outcome(False, capacity, max(0, (now - (tat - tolerance)) // interval), tat - now, retry, permille)
                    # Only a request over the configured limit earns points (see the Lua script): one refused
                    # merely because of the tightening adds none, so the score of a client back under its limit decays.
                    over_limit = now - (tat + check.cost * base_interval - base_interval * base_capacity) < 0
                    if params.enabled and params.deny_weight > 0 and check.penalty is not None and over_limit:
                        score = self.score(check.penalty, params.half_life, now)
                        outcome.crossed = self._bump(check.penalty, score, params.deny_weight, params, now)
                    outcomes.append(outcome)
                else:
                    outcomes.append(Outcome(True, capacity, diff // interval, new_tat - now, NEVER, permille))
                    writes.append((check, new_tat))
            else:
                month_id, _, end = self._window(now)
                stored = self.quota.get(check.key)
                if stored is not None and stored[0] == month_id:
                    used = stored[1]
                else:
                    seeded = self.seed(check.key, month_id) if self.seed is not None else None
                    used = seeded or 0
                if used + check.cost > check.capacity:
                    allowed = False
                    outcomes.append(Outcome(False, check.capacity, max(0, check.capacity - used), end - now, end - now))
                else:
                    outcomes.append(Outcome(True, check.capacity, check.capacity - used - check.cost, end - now, NEVER))
                    writes.append((check, used + check.cost))
        if allowed:
            for check, value in writes:
                if check.kind == GCRA:
                    self.tat[check.key] = value
                else:
                    month_id = self._month[0]
                    self.quota[check.key] = (month_id, value)
                    if self.deltas is not None:
                        previous = self.deltas.get(check.key)
                        counted = previous[1] if previous is not None and previous[0] == month_id else 0
                        self.deltas[check.key] = (month_id, counted + check.cost)
        return Verdict(allowed, outcomes, "memory")

    def delete(self, keys: Iterable[str]) -> None:
        for key in keys:
            self.tat.pop(key, None)
            self.quota.pop(key, None)
            self.penalties.pop(key, None)

    def sweep(self, now: int | None = None, params: PenaltyParams = NO_PENALTY) -> None:
        """Forget buckets that are full again, quotas of past months and penalties decayed to nothing."""
        now = self.clock() if now is None else now
        self.tat = {key: tat for key, tat in self.tat.items() if tat > now}
        month_id = self._window(now)[0]
        self.quota = {key: value for key, value in self.quota.items() if value[0] == month_id}
        half_life = params.half_life or 120 * US
        self.penalties = {key: value for key, value in self.penalties.items() if self.score(key, half_life, now) >= 0.01}

    def clear(self) -> None:
        self.tat.clear()
        self.quota.clear()
        self.penalties.clear()
