"""TOTP (RFC 6238) second factor through pyotp, with replay protection.

A code is accepted for the current 30-second step and one step either side (clock drift), and
only once: the step of the last accepted code is stored, and a code for that step or an earlier
one is refused.
"""

from __future__ import annotations

import hmac
import re
import time

import pyotp

_CODE = re.compile(r"^\d{6}$")


def totp_context(user_id: str) -> str:
    """The encryption context of a user's stored TOTP secret (binds the ciphertext to its row)."""
    return f"auth_users.totp_secret:{user_id}"


def new_secret() -> str:
    return pyotp.random_base32()


def provisioning_uri(secret: str, *, account: str, issuer: str) -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=account, issuer_name=issuer)


def accept(secret: str, code: str, *, last_step: int | None, now: float | None = None) -> int | None:
    """Return the time step ``code`` belongs to when it is valid and unused, else None."""
    code = code.strip().replace(" ", "")
    if not _CODE.match(code):
        return None
    totp = pyotp.TOTP(secret)
    moment = time.time() if now is None else now
    current = totp.timecode(moment)
    for step in (current - 1, current, current + 1):
        if last_step is not None and step <= last_step:
            continue
        if hmac.compare_digest(totp.generate_otp(step).encode(), code.encode()):
            return step
    return None


def code_for(secret: str, *, now: float | None = None) -> str:
    """The code of the current step (for tests and the enrolment check)."""
    return pyotp.TOTP(secret).at(time.time() if now is None else now)
