"""Password hashing (argon2id) off the event loop, behind a concurrency cap, and the password policy.

Each argon2id hash takes ``memory_cost`` KiB and tens of milliseconds of CPU. Hashing runs in a
dedicated thread pool so the event loop keeps serving; a semaphore caps how many run at once, and
at most ``queue_limit`` more wait for a turn: past that a login is shed at once with a 503 and
``Retry-After`` instead of queueing for seconds (overload sheds, it does not queue). Unknown
e-mails are checked against a dummy hash, so a login takes as long whether or not the account exists.
"""

from __future__ import annotations

import asyncio
import unicodedata
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from botcriptofy import ProblemError, ServiceUnavailable

# A few of the most common passwords of at least 8 characters; the length rule catches the rest
# of the trivial ones. Compared case-insensitively.
_COMMON = frozenset(
    {
        "password",
        "password1",
        "password123",
        "123456789",
        "1234567890",
        "12345678",
        "qwertyuiop",
        "iloveyou",
        "sunshine1",
        "princess1",
        "football1",
        "baseball1",
        "welcome1",
        "admin123",
        "letmein1",
        "qwerty123",
        "11111111",
        "00000000",
        "abcdefgh",
        "abc12345",
        "passw0rd",
        "trustno1",
        "123123123",
        "senha123",
        "senha1234",
        "mudar123",
        "bitcoin123",
        "password1234",
        "qwerty123456",
        "123456789012",
        "000000000000",
        "111111111111",
        "aaaaaaaaaaaa",
        "abcdefghijkl",
        "iloveyou1234",
        "welcome12345",
        "botcriptofy1",
        "botcriptofy123",
    }
)


T = TypeVar("T")


class Passwords:
    """Hash and verify passwords in a thread pool, at most ``concurrency`` at a time."""

    def __init__(self, *, time_cost: int, memory_cost: int, parallelism: int, concurrency: int, queue_limit: int = 16) -> None:
        self._executor = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="botcriptofy-auth-argon2")
        self._semaphore = asyncio.Semaphore(concurrency)
        self.concurrency = concurrency
        self.queue_limit = queue_limit
        self.waiting = 0
        self.shed = 0
        self._seconds = 0.2  # a running estimate of one hash, for Retry-After
        self.configure(time_cost=time_cost, memory_cost=memory_cost, parallelism=parallelism)

    def configure(self, *, time_cost: int, memory_cost: int, parallelism: int) -> None:
        """Change the cost parameters; existing hashes are upgraded on their owner's next login."""
        self._hasher = PasswordHasher(time_cost=time_cost, memory_cost=memory_cost, parallelism=parallelism, type=Type.ID)
        self._dummy: str | None = None

    async def _run(self, func: Callable[..., T], *args: Any) -> T:
        if self._semaphore.locked() and self.waiting >= self.queue_limit:
            self.shed += 1
            backlog = (self.waiting + self.concurrency) * self._seconds / self.concurrency
            raise ServiceUnavailable(
                "Too many password checks are waiting; retry shortly.", retry_after=max(1.0, backlog), dependency="password-hashing"
            )
        self.waiting += 1
        try:
            await self._semaphore.acquire()
        finally:
            self.waiting -= 1
        try:
            loop = asyncio.get_running_loop()
            started = loop.time()
            result = await loop.run_in_executor(self._executor, func, *args)
            self._seconds = 0.8 * self._seconds + 0.2 * (loop.time() - started)
            return result
        finally:
            self._semaphore.release()

    async def hash(self, password: str) -> str:
        return await self._run(self._hasher.hash, password)

    async def verify(self, stored: str | None, password: str) -> tuple[bool, str | None]:
        """Return ``(matches, new_hash)``; ``new_hash`` is set when the stored hash used old parameters."""
        if stored is None:
            if self._dummy is None:
                self._dummy = await self._run(self._hasher.hash, "not the password of anybody")
            await self._run(self._check, self._dummy, password)
            return False, None
        matches = await self._run(self._check, stored, password)
        if matches and self._hasher.check_needs_rehash(stored):
            return True, await self.hash(password)
        return matches, None

    def _check(self, stored: str, password: str) -> bool:
        try:
            return self._hasher.verify(stored, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def normalise_password(password: str) -> str:
    """NFKC, so the same password typed on two keyboards (composed or decomposed accents) matches."""
    return unicodedata.normalize("NFKC", password)


def check_policy(
    password: str, *, min_length: int, max_length: int, email: str | None = None, name: str | None = None, field: str = "password"
) -> None:
    """Raise a 422 problem naming ``field`` when the password breaks the policy."""
    problems: list[str] = []
    length = len(password)
    if length < min_length:
        problems.append(f"must be at least {min_length} characters long (got {length})")
    if length > max_length:
        problems.append(f"must be at most {max_length} characters long")
    if any(unicodedata.category(ch) == "Cc" for ch in password):
        problems.append("must not contain control characters")
    lowered = password.casefold()
    if lowered in _COMMON or len(set(password)) < 4:
        problems.append("is too common or too repetitive")
    if email:
        local = email.partition("@")[0].casefold()
        if len(local) >= 4 and local in lowered:
            problems.append("must not contain your e-mail address")
    if name and len(name) >= 4 and name.casefold() in lowered:
        problems.append("must not contain your name")
    if problems:
        message = f"The {field} " + "; ".join(problems) + "."
        raise ProblemError(
            422,
            "Validation failed",
            message,
            errors=[{"field": field, "message": m, "type": "password_policy", "in": "body"} for m in problems],
        )
