"""Field encryption: AES-256-GCM under a named key, with rotation.

A stored value is ``v1.<key id>.<base64url(nonce || ciphertext || tag)>``. The associated data
binds it to its table, column and row, so a ciphertext copied into another row or column does not
decrypt. The first configured key encrypts; every configured key decrypts, and
``botcriptofy users rotate-field-keys`` re-encrypts old values under the current key.
"""

from __future__ import annotations

import base64
import binascii
import os
import re

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_KEY_ID = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
VERSION = "v1"


def parse_key_entry(entry: str, position: int = 0) -> tuple[str, bytes]:
    """Parse ``key_id:base64`` (standard or URL-safe base64 of 32 bytes); raise ``ValueError`` naming the entry."""
    key_id, sep, encoded = entry.partition(":")
    if not sep or not _KEY_ID.match(key_id):
        raise ValueError(f"entry {position} must look like 'key_id:base64 of 32 bytes' with a key id of letters, digits, '_' or '-'")
    text = encoded.strip().replace("-", "+").replace("_", "/")
    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"entry {position} ('{key_id}'): the key is not valid base64") from None
    if len(raw) != 32:
        raise ValueError(f"entry {position} ('{key_id}'): AES-256 needs 32 bytes, got {len(raw)}")
    return key_id, raw


def new_key_entry(key_id: str) -> str:
    return f"{key_id}:{base64.b64encode(os.urandom(32)).decode()}"


class FieldDecryptError(ValueError):
    """A value that cannot be decrypted: unknown key id, tampered, or moved to another row."""


class FieldCipher:
    """AES-256-GCM under named keys; also the kernel's secret box (``botcriptofy.SecretBox``: ``seal``, ``open``, ``needs_reseal``)."""

    def __init__(self, entries: list[str]) -> None:
        if not entries:
            raise ValueError("no field encryption key is configured")
        parsed = [parse_key_entry(entry, i) for i, entry in enumerate(entries)]
        self.current_id = parsed[0][0]
        self._keys = {key_id: AESGCM(raw) for key_id, raw in parsed}

    def encrypt(self, plaintext: str, *, context: str) -> str:
        nonce = os.urandom(12)
        sealed = self._keys[self.current_id].encrypt(nonce, plaintext.encode(), context.encode())
        return f"{VERSION}.{self.current_id}.{base64.urlsafe_b64encode(nonce + sealed).decode().rstrip('=')}"

    def key_id_of(self, stored: str) -> str | None:
        parts = stored.split(".", 2)
        return parts[1] if len(parts) == 3 and parts[0] == VERSION else None

    def decrypt(self, stored: str, *, context: str) -> str:
        parts = stored.split(".", 2)
        if len(parts) != 3 or parts[0] != VERSION:
            raise FieldDecryptError("not an encrypted field value")
        aead = self._keys.get(parts[1])
        if aead is None:
            raise FieldDecryptError(f"encrypted under key '{parts[1]}', which is no longer configured in auth.field_encryption_keys")
        try:
            blob = base64.urlsafe_b64decode(parts[2] + "=" * (-len(parts[2]) % 4))
            return aead.decrypt(blob[:12], blob[12:], context.encode()).decode()
        except (InvalidTag, ValueError, binascii.Error):
            raise FieldDecryptError("the encrypted value was altered or belongs to another record") from None

    def needs_rotation(self, stored: str) -> bool:
        return self.key_id_of(stored) != self.current_id

    # -- botcriptofy.SecretBox ------------------------------------------------------------

    @property
    def key_id(self) -> str:
        return self.current_id

    @property
    def key_ids(self) -> list[str]:
        return list(self._keys)

    def seal(self, plaintext: str, *, context: str) -> str:
        return self.encrypt(plaintext, context=context)

    def open(self, sealed: str, *, context: str) -> str:
        return self.decrypt(sealed, context=context)

    def needs_reseal(self, sealed: str) -> bool:
        return self.needs_rotation(sealed)
