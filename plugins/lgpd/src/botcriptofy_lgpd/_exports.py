"""Export files: one JSON document and a manifest in a ZIP, encrypted at rest with AES-256-GCM.

File layout: ``b"BCFX1" | key id length (1 byte) | key id | 12-byte nonce | ciphertext``; the
request id is the associated data, so a file renamed to another request does not decrypt.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import secrets
import zipfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ._settings import LgpdSettings, parse_key

MAGIC = b"BCFX1"


class ExportKeys:
    def __init__(self, entries: list[str]) -> None:
        parsed = [parse_key(entry) for entry in entries]
        if not parsed:
            raise ValueError("no export key")
        self.active = parsed[0][0]
        self._keys = dict(parsed)

    def raw_active(self) -> bytes:
        return self._keys[self.active]

    def encrypt(self, data: bytes, *, context: str) -> bytes:
        nonce = os.urandom(12)
        key_id = self.active.encode()
        return MAGIC + bytes([len(key_id)]) + key_id + nonce + AESGCM(self._keys[self.active]).encrypt(nonce, data, context.encode())

    def decrypt(self, blob: bytes, *, context: str) -> bytes:
        if not blob.startswith(MAGIC):
            raise ValueError("not an export file")
        size = blob[len(MAGIC)]
        start = len(MAGIC) + 1
        key_id = blob[start : start + size].decode()
        nonce = blob[start + size : start + size + 12]
        key = self._keys.get(key_id)
        if key is None:
            raise ValueError(f"export key '{key_id}' is no longer configured (lgpd.export_keys)")
        return AESGCM(key).decrypt(nonce, blob[start + size + 12 :], context.encode())


def load_keys(settings: LgpdSettings, state_dir: Path, *, production: bool) -> ExportKeys:
    entries = list(settings.export_keys)
    if not entries:
        if production:
            raise ValueError("lgpd.export_keys is empty, and a development key is refused in production: set BOTCRIPTOFY_LGPD__EXPORT_KEYS")
        path = state_dir / "lgpd" / "export-key"
        if not path.exists():
            import base64

            path.parent.mkdir(parents=True, exist_ok=True)
            temporary = path.with_suffix(f".{secrets.token_hex(4)}.tmp")
            temporary.write_text("dev1:" + base64.urlsafe_b64encode(secrets.token_bytes(32)).decode() + "\n")
            temporary.chmod(0o600)
            temporary.replace(path)
        entries = [path.read_text().strip()]
    return ExportKeys(entries)


def export_dir(settings: LgpdSettings, state_dir: Path) -> Path:
    directory = Path(settings.export_dir) if settings.export_dir else state_dir / "lgpd" / "exports"
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def build_zip(request_id: str, subject: dict[str, Any], gathered: dict[str, Any]) -> bytes:
    """A ZIP with ``data.json`` (every plugin's export) and ``manifest.json`` (what is inside, with its SHA-256)."""
    generated = datetime.now(UTC).isoformat()
    document = json.dumps(
        {"subject": subject, "generated_at": generated, "plugins": gathered}, indent=2, ensure_ascii=False, default=str, sort_keys=True
    ).encode()
    manifest = {
        "request_id": request_id,
        "generated_at": generated,
        "format": "botcriptofy-privacy-export/1",
        "files": {"data.json": {"sha256": hashlib.sha256(document).hexdigest(), "bytes": len(document)}},
        "plugins": sorted(gathered),
    }
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("manifest.json", json.dumps(manifest, indent=2, sort_keys=True))
        archive.writestr("data.json", document)
    return buffer.getvalue()


def write_file(directory: Path, name: str, blob: bytes) -> None:
    temporary = directory / f".{name}.{secrets.token_hex(4)}.tmp"
    temporary.write_bytes(blob)
    temporary.chmod(0o600)
    temporary.replace(directory / name)
