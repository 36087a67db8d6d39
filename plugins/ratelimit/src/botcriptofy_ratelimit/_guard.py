"""The kernel's ``rate_limiter`` hook: plugins' own guards, such as the auth plugin's login brute-force guard."""

from __future__ import annotations

import math
from collections.abc import Sequence

from botcriptofy import RateLimit, RateLimitDecision

from ._backend import MemoryBackend, RedisBackend, Unavailable
from ._core import GCRA, NEVER, NO_PENALTY, US, Check, Outcome, interval_of


def choose(outcomes: Sequence[Outcome]) -> int:
    """The outcome to report: the refusing one that waits longest, else the one closest to exhaustion."""
    if len(outcomes) == 1:
        return 0
    chosen = 0
    refused = False
    wait = -1.0
    for i, outcome in enumerate(outcomes):
        if not outcome.allowed:
            this = math.inf if outcome.retry_after == NEVER else outcome.retry_after
            if not refused or this > wait:  # the first of equal waits, as max() picks
                chosen, wait, refused = i, this, True
        elif not refused and outcome.remaining < outcomes[chosen].remaining:  # the first of equal remainders, as min()
            chosen = i
    return chosen


class Guard:
    """A :class:`botcriptofy.RateLimiter` over the plugin's backend; keys live under ``<key_prefix>g:``.

    ``await guard.hit(RateLimit("login:ip:203.0.113.9", limit=10, period=900, burst=10))`` counts one
    attempt against every limit given, atomically (all or none are counted), and says whether it is
    allowed. ``await guard.reset(key)`` forgets a key (after a successful login, say).
    """

    def __init__(self, backend: MemoryBackend | RedisBackend, prefix: str) -> None:
        self.backend = backend
        self.prefix = prefix

    async def hit(self, *limits: RateLimit) -> RateLimitDecision:
        if not limits:
            raise ValueError("hit() needs at least one RateLimit")
        checks = []
        for limit in limits:
            if limit.limit < 1 or limit.period <= 0 or limit.burst < 1 or limit.cost < 0:
                raise ValueError(f"{limit!r}: limit and burst must be at least 1, period positive and cost not negative")
            checks.append(Check(GCRA, f"{self.prefix}g:{limit.key}", interval_of(limit.limit, limit.period), limit.burst, limit.cost))
        try:
            verdict = await self.backend.hit(checks, NO_PENALTY)
        except Unavailable:
            first = limits[0]
            return RateLimitDecision(False, first.burst, 0, 1.0, 1.0, key=first.key)
        index = choose(verdict.outcomes)
        outcome = verdict.outcomes[index]
        retry = None
        if not outcome.allowed:
            retry = outcome.reset_after / US if outcome.retry_after == NEVER else outcome.retry_after / US
        return RateLimitDecision(
            allowed=verdict.allowed,
            limit=outcome.limit,
            remaining=outcome.remaining,
            reset_after=outcome.reset_after / US,
            retry_after=retry,
            key=limits[index].key,
        )

    async def reset(self, *keys: str) -> None:
        """Forget the given limit keys (as passed in :class:`RateLimit`)."""
        await self.backend.delete([f"{self.prefix}g:{key}" for key in keys])
