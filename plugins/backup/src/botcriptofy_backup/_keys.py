"""Backup encryption keys: read from the environment only, never from a settings file.

The variables do not start with ``BOTCRIPTOFY_``: those are settings (Dynaconf reads them into sections).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

KEYS_VARIABLE = "BCF_BACKUP_KEYS"
PG_CIPHER_VARIABLE = "BCF_BACKUP_PG_CIPHER_PASS"
KEY_SIZE = 32


class BackupKeyError(Exception):
    """A key is missing, malformed or not the one a backup was encrypted with."""


def key_check(key: bytes) -> str:
    """A short public fingerprint of ``key``, stored in each backup's header to tell a wrong key from an altered file."""
    return hmac.new(key, b"botcriptofy-backup key check", hashlib.sha256).hexdigest()[:16]


@dataclass(frozen=True)
class Keyring:
    """AES-256 keys by id; the first encrypts new backups, every one decrypts the backups it encrypted."""

    keys: tuple[tuple[str, bytes], ...]
    source: str = KEYS_VARIABLE

    @property
    def current(self) -> tuple[str, bytes]:
        return self.keys[0]

    def get(self, key_id: str) -> bytes:
        for candidate, key in self.keys:
            if candidate == key_id:
                return key
        held = ", ".join(candidate for candidate, _ in self.keys)
        raise BackupKeyError(
            f"key '{key_id}' is not among the keys of {self.source} (it holds: {held}); add the retired key back to read it"
        )

    @classmethod
    def parse(cls, text: str, *, source: str = KEYS_VARIABLE) -> Keyring:
        """Parse ``id:base64[,id:base64...]`` (32-byte keys, newest first)."""
        keys: list[tuple[str, bytes]] = []
        for entry in (part.strip() for part in text.split(",")):
            if not entry:
                continue
            key_id, sep, encoded = entry.partition(":")
            if not sep or not key_id.strip():
                raise BackupKeyError(f"{source}: an entry is 'key_id:base64 of {KEY_SIZE} bytes'")
            try:
                raw = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
            except ValueError:
                raise BackupKeyError(f"{source}: key '{key_id}' is not base64") from None
            if len(raw) != KEY_SIZE:
                raise BackupKeyError(f"{source}: key '{key_id}' decodes to {len(raw)} bytes, expected {KEY_SIZE}")
            if any(existing == key_id for existing, _ in keys):
                raise BackupKeyError(f"{source}: key id '{key_id}' appears twice")
            keys.append((key_id.strip(), raw))
        if not keys:
            raise BackupKeyError(f"{source} holds no key")
        return cls(tuple(keys), source)


def new_key_entry(key_id: str) -> str:
    """A fresh ``key_id:base64`` entry for ``BCF_BACKUP_KEYS``."""
    return f"{key_id}:{base64.urlsafe_b64encode(secrets.token_bytes(KEY_SIZE)).decode().rstrip('=')}"


def load_keyring(env: str, state_dir: Path) -> Keyring:
    """The keyring from ``BCF_BACKUP_KEYS``; outside production a development key under the state directory."""
    text = os.environ.get(KEYS_VARIABLE, "")
    if text.strip():
        return Keyring.parse(text)
    if env == "production":
        raise BackupKeyError(f"set {KEYS_VARIABLE} (id:base64 of 32 bytes; `botcriptofy backup new-key ID` makes one)")
    path = state_dir / "backup" / "development.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(new_key_entry("development"))
    return Keyring.parse(path.read_text().strip(), source=str(path))


def load_pg_cipher_pass(env: str, state_dir: Path) -> str:
    """The pgBackRest repository passphrase from ``BCF_BACKUP_PG_CIPHER_PASS`` (a development one outside production)."""
    text = os.environ.get(PG_CIPHER_VARIABLE, "")
    if text:
        return text
    if env == "production":
        raise BackupKeyError(f"set {PG_CIPHER_VARIABLE} (the pgBackRest repository passphrase)")
    path = state_dir / "backup" / "development-pg-cipher-pass"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(48))
    return path.read_text().strip()
