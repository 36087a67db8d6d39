"""SQLite backups: an online snapshot through SQLite's backup API, compressed and sealed with AES-256-GCM.

File layout (``<database>-<UTC stamp>.bcfbak``)::

    MAGIC (8 bytes) | header length (4 bytes, big endian) | header (JSON) | nonce (12) | ciphertext | tag (16)

The header names the key id, a public fingerprint of the key and the compression; it is the
additional authenticated data, so altering any byte of the file fails authentication. Restores and
verification decrypt into a temporary file that only becomes visible once the tag has been checked.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import sqlite3
import struct
import tempfile
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from ._keys import BackupKeyError, Keyring, key_check

MAGIC = b"BCFBAK01"
SUFFIX = ".bcfbak"
CHUNK = 1 << 20
TAG = 16
NONCE = 12


class BackupError(Exception):
    """A backup cannot be made, read or restored; the message names the file."""


@dataclass(frozen=True)
class SqliteBackup:
    path: Path
    database: str
    created_at: datetime
    key_id: str
    size: int
    source_bytes: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.path.name,
            "database": self.database,
            "engine": "sqlite",
            "type": "full",
            "created_at": self.created_at.isoformat(),
            "key_id": self.key_id,
            "size_bytes": self.size,
            "source_bytes": self.source_bytes,
        }


def snapshot(source: Path, destination: Path, *, pages: int = 4096) -> None:
    """Copy ``source`` to ``destination`` consistently while it stays open for writes (SQLite's backup API)."""
    if not source.exists():
        raise BackupError(f"{source}: the SQLite database does not exist")
    src = sqlite3.connect(str(source), timeout=30)
    try:
        dst = sqlite3.connect(str(destination))
        try:
            src.backup(dst, pages=pages)
        finally:
            dst.close()
    finally:
        src.close()


def _header(path: Path, handle: Any) -> tuple[bytes, dict[str, Any]]:
    magic = handle.read(len(MAGIC))
    if magic != MAGIC:
        raise BackupError(f"{path}: not a BotCriptoFy backup (bad magic)")
    raw_length = handle.read(4)
    if len(raw_length) != 4:
        raise BackupError(f"{path}: truncated header")
    (length,) = struct.unpack(">I", raw_length)
    if length > 65536:
        raise BackupError(f"{path}: header length {length} is not plausible; the file was altered")
    raw = handle.read(length)
    try:
        header = json.loads(raw)
    except ValueError:
        raise BackupError(f"{path}: the header is not JSON; the file was altered") from None
    if not isinstance(header, dict) or not {"key_id", "key_check", "database", "created_at"} <= header.keys():
        raise BackupError(f"{path}: the header lacks fields; the file was altered")
    return magic + raw_length + raw, header


def read_info(path: Path) -> SqliteBackup:
    with path.open("rb") as handle:
        _, header = _header(path, handle)
    return SqliteBackup(
        path=path,
        database=str(header["database"]),
        created_at=datetime.fromisoformat(header["created_at"]),
        key_id=str(header["key_id"]),
        size=path.stat().st_size,
        source_bytes=int(header.get("source_bytes", 0)),
    )


def create(source: Path, directory: Path, database: str, keyring: Keyring, *, level: int = 3, now: datetime | None = None) -> SqliteBackup:
    """Snapshot ``source`` and write one sealed backup into ``directory``; return it."""
    directory.mkdir(parents=True, exist_ok=True)
    created = now or datetime.now(UTC)
    name = f"{database}-{created.strftime('%Y%m%dT%H%M%S%fZ')}{SUFFIX}"
    target = directory / name
    key_id, key = keyring.current
    with tempfile.TemporaryDirectory(dir=directory, prefix=".snapshot-") as scratch:
        plain = Path(scratch) / "snapshot.sqlite"
        snapshot(source, plain)
        header = json.dumps(
            {
                "format": 1,
                "database": database,
                "created_at": created.isoformat(),
                "key_id": key_id,
                "key_check": key_check(key),
                "cipher": "AES-256-GCM",
                "compression": "zlib",
                "source_bytes": plain.stat().st_size,
            },
            sort_keys=True,
        ).encode()
        aad = MAGIC + struct.pack(">I", len(header)) + header
        nonce = secrets.token_bytes(NONCE)
        encryptor = Cipher(algorithms.AES(key), modes.GCM(nonce)).encryptor()
        encryptor.authenticate_additional_data(aad)
        compressor = zlib.compressobj(level)
        partial = directory / f".{name}.partial"
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "wb") as out, plain.open("rb") as data:
                out.write(aad + nonce)
                while chunk := data.read(CHUNK):
                    out.write(encryptor.update(compressor.compress(chunk)))
                out.write(encryptor.update(compressor.flush()))
                out.write(encryptor.finalize())
                out.write(encryptor.tag)
                out.flush()
                os.fsync(out.fileno())
            partial.rename(target)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
    return read_info(target)


def decrypt_to(path: Path, destination: Path, keyring: Keyring) -> dict[str, Any]:
    """Decrypt and decompress ``path`` into ``destination`` (created only when the tag verifies); return the header."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        aad, header = _header(path, handle)
        key_id = str(header["key_id"])
        try:
            key = keyring.get(key_id)
        except BackupKeyError as error:
            raise BackupKeyError(f"{path}: {error}") from None
        if key_check(key) != header["key_check"]:
            raise BackupKeyError(f"{path}: wrong key -- the key '{key_id}' of {keyring.source} is not the key that encrypted this backup")
        nonce = handle.read(NONCE)
        body = size - len(aad) - NONCE - TAG
        if len(nonce) != NONCE or body < 0:
            raise BackupError(f"{path}: truncated backup")
        handle.seek(size - TAG)
        tag = handle.read(TAG)
        handle.seek(len(aad) + NONCE)
        decryptor = Cipher(algorithms.AES(key), modes.GCM(nonce, tag)).decryptor()
        decryptor.authenticate_additional_data(aad)
        decompressor = zlib.decompressobj()
        destination.parent.mkdir(parents=True, exist_ok=True)
        partial = destination.with_name(f".{destination.name}.partial")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "wb") as out:
                remaining = body
                while remaining:
                    chunk = handle.read(min(CHUNK, remaining))
                    if not chunk:
                        raise BackupError(f"{path}: truncated backup")
                    remaining -= len(chunk)
                    out.write(decompressor.decompress(decryptor.update(chunk)))
                decryptor.finalize()
                out.write(decompressor.flush())
                out.flush()
                os.fsync(out.fileno())
            partial.rename(destination)
        except (InvalidTag, zlib.error):
            partial.unlink(missing_ok=True)
            raise BackupError(f"{path}: authentication failed -- the backup file was altered or truncated") from None
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
    return header


def integrity(database: Path) -> str:
    connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        rows = connection.execute("PRAGMA integrity_check").fetchall()
    finally:
        connection.close()
    return "; ".join(str(row[0]) for row in rows)


def verify(path: Path, keyring: Keyring) -> dict[str, Any]:
    """Decrypt ``path`` into a scratch file and run ``PRAGMA integrity_check``; raise ``BackupError`` naming the file."""
    with tempfile.TemporaryDirectory(prefix="bcf-verify-") as scratch:
        restored = Path(scratch) / "verify.sqlite"
        header = decrypt_to(path, restored, keyring)
        try:
            result = integrity(restored)
        except sqlite3.DatabaseError as error:
            raise BackupError(f"{path}: the decrypted database does not open ({error})") from None
        if result != "ok":
            raise BackupError(f"{path}: PRAGMA integrity_check failed: {result[:500]}")
    return {"id": path.name, "database": header["database"], "key_id": header["key_id"], "integrity": "ok", "valid": True}


def restore(path: Path, target: Path, keyring: Keyring, *, force: bool = False) -> dict[str, Any]:
    """Restore ``path`` into the SQLite file ``target`` (refused when it exists, unless ``force``)."""
    if target.exists() and not force:
        raise BackupError(f"{target}: the restore target exists; choose another path or pass force")
    header = decrypt_to(path, target, keyring)
    for suffix in ("-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            target.with_name(target.name + suffix).unlink()
    return {"id": path.name, "database": header["database"], "target": str(target)}


def listing(directory: Path, database: str | None = None) -> list[SqliteBackup]:
    """Backups in ``directory``, newest first; unreadable files are listed by ``verify``, not here."""
    found: list[SqliteBackup] = []
    if not directory.exists():
        return found
    for path in directory.glob(f"*{SUFFIX}"):
        try:
            info = read_info(path)
        except (BackupError, OSError, ValueError):
            continue
        if database is None or info.database == database:
            found.append(info)
    found.sort(key=lambda item: item.created_at, reverse=True)
    return found


def expire(directory: Path, database: str, keep: int) -> list[str]:
    """Delete all but the newest ``keep`` backups of ``database``; return the removed names."""
    removed = []
    for old in listing(directory, database)[keep:]:
        old.path.unlink(missing_ok=True)
        removed.append(old.path.name)
    return removed


def table_counts(database: Path) -> dict[str, int]:
    """Row count of every table of a SQLite file."""
    connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        tables = [row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")]
        return {
            table: connection.execute(f'SELECT count(*) FROM "{table.replace(chr(34), chr(34) * 2)}"').fetchone()[0] for table in tables
        }
    finally:
        connection.close()
