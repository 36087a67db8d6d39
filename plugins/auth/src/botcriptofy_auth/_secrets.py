"""Opaque credentials: refresh tokens and API keys, stored only as keyed hashes (HMAC-SHA-256 with a pepper).

Both are 256-bit random values, so a fast keyed hash is the right tool (a slow password hash would
only cost CPU); the pepper means a stolen database alone cannot even confirm a guessed key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets

API_KEY_PREFIX = "bcf"
_API_KEY = re.compile(r"^bcf_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
_REFRESH = re.compile(r"^[A-Za-z0-9_-]{43}$")


class Peppers:
    """The current pepper and those retired, each turning a secret into its stored hash."""

    def __init__(self, current: str, retired: list[str] | None = None) -> None:
        if not current:
            raise ValueError("the pepper is empty")
        self.current = current.encode()
        self.retired = [p.encode() for p in retired or () if p]

    def hash(self, purpose: str, secret: str, *, pepper: bytes | None = None) -> str:
        mac = hmac.new(pepper or self.current, f"{purpose}\x00{secret}".encode(), hashlib.sha256)
        return mac.hexdigest()

    def candidates(self, purpose: str, secret: str) -> list[str]:
        """The hash under the current pepper first, then under each retired one."""
        return [self.hash(purpose, secret), *(self.hash(purpose, secret, pepper=p) for p in self.retired)]


def new_refresh_token() -> str:
    return secrets.token_urlsafe(32)


def looks_like_refresh_token(value: str) -> bool:
    return bool(_REFRESH.match(value))


def new_api_key() -> tuple[str, str]:
    """Return ``(key, prefix)``: the secret shown once, and its public prefix shown in listings."""
    prefix = secrets.token_hex(6)
    return f"{API_KEY_PREFIX}_{prefix}_{secrets.token_urlsafe(32)}", prefix


def parse_api_key(value: str) -> str | None:
    """Return the public prefix of a well-formed API key, or None."""
    match = _API_KEY.match(value)
    return match.group(1) if match else None


def new_pepper() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()
