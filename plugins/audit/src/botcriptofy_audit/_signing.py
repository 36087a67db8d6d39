"""Ed25519 keys that sign checkpoints: the active key signs, every known key verifies (rotation)."""

from __future__ import annotations

import base64
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ._settings import AuditSettings, parse_key


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def new_key_entry(key_id: str) -> str:
    """A fresh ``key_id:base64`` signing key entry, for ``audit.signing_keys``."""
    return f"{key_id}:{_b64(secrets.token_bytes(32))}"


def public_entry(entry: str) -> str:
    """The ``key_id:base64`` public key of a signing key entry, for ``audit.verify_keys`` after rotation."""
    key_id, seed = parse_key(entry, size=32, what="signing key")
    public = Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes_raw()
    return f"{key_id}:{_b64(public)}"


class KeyRing:
    """The active signing key and the public keys of every known key, by key id."""

    def __init__(self, signing: list[str], verifying: list[str]) -> None:
        if not signing:
            raise ValueError("no signing key")
        self._private: dict[str, Ed25519PrivateKey] = {}
        self._public: dict[str, Ed25519PublicKey] = {}
        for entry in signing:
            key_id, seed = parse_key(entry, size=32, what="signing key")
            private = Ed25519PrivateKey.from_private_bytes(seed)
            self._private[key_id] = private
            self._public[key_id] = private.public_key()
        for entry in verifying:
            key_id, raw = parse_key(entry, size=32, what="verify key")
            self._public.setdefault(key_id, Ed25519PublicKey.from_public_bytes(raw))
        self.active = parse_key(signing[0], size=32, what="signing key")[0]

    @property
    def key_ids(self) -> list[str]:
        return sorted(self._public)

    def public_keys(self) -> dict[str, str]:
        return {key_id: _b64(key.public_bytes_raw()) for key_id, key in sorted(self._public.items())}

    def sign(self, message: bytes) -> tuple[str, str]:
        """Return ``(key_id, signature)`` by the active key."""
        return self.active, _b64(self._private[self.active].sign(message))

    def verify(self, key_id: str, message: bytes, signature: str) -> bool:
        key = self._public.get(key_id)
        if key is None:
            return False
        try:
            key.verify(base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)), message)
        except (InvalidSignature, ValueError):
            return False
        return True


def load_keyring(settings: AuditSettings, state_dir: Path, *, production: bool) -> KeyRing:
    """Build the key ring from the settings, or from a development key kept under ``state_dir/audit``."""
    signing = list(settings.signing_keys)
    if not signing:
        if production:
            raise ValueError(
                "audit.signing_keys is empty, and a development key is refused in production: set BOTCRIPTOFY_AUDIT__SIGNING_KEYS "
                "(generate one with `botcriptofy audit new-key`)"
            )
        path = state_dir / "audit" / "signing-key"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            temporary = path.with_suffix(f".{secrets.token_hex(4)}.tmp")
            temporary.write_text(new_key_entry("dev1") + "\n")
            temporary.chmod(0o600)
            temporary.replace(path)
        signing = [path.read_text().strip()]
    return KeyRing(signing, list(settings.verify_keys))
