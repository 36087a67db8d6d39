"""Brute-force throttling that an attacker cannot turn against the owner.

Failed logins are counted per (account, address) and per address, in the shared cache. Past
``lockout_threshold`` failures for one account from one address (or ``address_failure_threshold``
from one address over all accounts) that address waits before its next attempt, and the wait
doubles with each further failure (``login_delay_base`` up to ``login_delay_max``): the attacker's
address slows down, the owner's usual address does not. Only many failures from many addresses
(``account_failure_ceiling`` for one account) guard the account itself, and even then the right
password from an address the owner used before, or with a TOTP code, still logs in.

Unknown e-mails are counted exactly like accounts, so the answers do not reveal which exist.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

from botcriptofy import Kernel, ProblemError

from ._settings import AuthSettings
from ._state import CACHE_NAMESPACE, settings_of

WAIT_TYPE = "https://botcriptofy.dev/problems/too-many-attempts"


def _email_hash(email: str) -> str:
    return hashlib.sha256(email.encode()).hexdigest()[:32]


def _keys(email: str, ip: str | None) -> list[tuple[str, str]]:
    if ip is None:
        return []
    return [("pair", f"fail-pair:{_email_hash(email)}:{ip}"), ("address", f"fail-ip:{ip}")]


def wait_problem(seconds: float, scope: str) -> ProblemError:
    retry = max(1, int(seconds + 0.999))
    what = "for this account from this address" if scope == "pair" else "from this address"
    return ProblemError(
        429,
        "Too Many Requests",
        f"Too many failed logins {what}; retry in {retry} s.",
        type=WAIT_TYPE,
        headers={"Retry-After": str(retry)},
        retry_after=retry,
    )


async def check(kernel: Kernel, email: str, ip: str | None) -> None:
    """Raise 429 while the address, or the address for this account, must wait."""
    cache = kernel.cache()
    moment = time.time()
    for scope, key in _keys(email, ip):
        record = await cache.get(key, namespace=CACHE_NAMESPACE)
        if isinstance(record, dict) and float(record.get("until", 0)) > moment:
            raise wait_problem(float(record["until"]) - moment, scope)


def _delay(settings: AuthSettings, count: int, threshold: int) -> float:
    if count < threshold:
        return 0.0
    return float(min(settings.login_delay_base * 2 ** min(count - threshold, 30), settings.login_delay_max))


async def record_failure(kernel: Kernel, email: str, ip: str | None) -> tuple[str, float, int] | None:
    """Count a failure; return ``(scope, wait, failures)`` of the longest wait it starts, or None."""
    settings = settings_of(kernel)
    cache = kernel.cache()
    moment = time.time()
    longest: tuple[str, float, int] | None = None
    for scope, key in _keys(email, ip):
        threshold = settings.lockout_threshold if scope == "pair" else settings.address_failure_threshold
        record: Any = await cache.get(key, namespace=CACHE_NAMESPACE)
        if not isinstance(record, dict) or float(record.get("start", 0)) < moment - settings.lockout_window:
            record = {"count": 0, "start": moment}
        count = int(record["count"]) + 1
        wait = _delay(settings, count, threshold)
        await cache.set(
            key,
            {"count": count, "start": record["start"], "until": moment + wait if wait else 0, "wait": wait},
            ttl=settings.lockout_window + settings.login_delay_max,
            namespace=CACHE_NAMESPACE,
        )
        if wait and (longest is None or wait > longest[1]):
            longest = (scope, wait, count)
    return longest


async def forget_pair(kernel: Kernel, email: str, ip: str | None) -> None:
    """A successful login clears its (account, address) count: the owner's own typos never add up."""
    if ip is not None:
        await kernel.cache().delete(f"fail-pair:{_email_hash(email)}:{ip}", namespace=CACHE_NAMESPACE)
