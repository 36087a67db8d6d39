"""How an entry is stored in Redis: a small header (format, expiry, tags), an optional signature, the encoded value.

The header lets a worker that reads an entry from Redis keep its in-process copy no longer than the
Redis entry lives and index it under its tags, so a tag invalidation published by another worker
drops it. The write id (random, also carried by the invalidation message of the write) tells a
worker whether a message that arrived while it was reading concerns the very value it read. The
format byte is read back from each entry, so changing ``cache.serializer`` live never makes
existing entries unreadable.

Trust. Whoever can write a key in Redis decides what a worker decodes. JSON (the default) is data
only. Pickle runs code while it loads, so it is written only when ``cache.serializer = "pickle"``
and then always signed, and read only when its HMAC-SHA256 (over the header, the tags and the
body, checked in constant time) matches the service's ``signing_key`` or one of its
``previous_signing_keys``. With a signing key every entry is signed, JSON included, and an
unsigned or wrongly signed entry is refused: a forged value (say, a cached caller made
super-admin) is then refused as well. The format byte 1 (the unsigned pickles of version 0.1)
is never loaded.
"""

from __future__ import annotations

import hmac
import json
import pickle
import struct
from collections.abc import Iterable
from typing import Any

_HEAD = struct.Struct(">BdqH")  # format, expires_at (epoch seconds, 0 = never), write id, length of the tag blob
LEGACY_PICKLE = 1  # unsigned pickle, written by version 0.1: never loaded
JSON = 2
PICKLE = 3
SIGNED = 0x80  # flag on the format byte: a 32-byte HMAC-SHA256 follows the tags
FORMATS = {"json": JSON, "pickle": PICKLE}
MAC_SIZE = 32
TAG_SEPARATOR = "\x1f"


class DecodeError(ValueError):
    """An entry that is not in this codec's format (written by something else, or corrupt)."""

    reason = "unreadable"


class RefusedEntry(DecodeError):
    """An entry this service must not load: a pickle it cannot authenticate, or a signature that does not match."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class NotData(TypeError):
    """A value the JSON serializer cannot store (raised to the caller of ``set``/``write``/``get_or_set``)."""


class Codec:
    """Encode and decode entries with one serializer and a signing key (and earlier keys, while rotating)."""

    __slots__ = ("_keys", "_signing", "fmt")

    def __init__(self, serializer: str, signing_key: str = "", previous_keys: Iterable[str] = ()) -> None:
        self.fmt = FORMATS[serializer]
        self._signing = signing_key.encode() if signing_key else None
        self._keys = tuple(key.encode() for key in (signing_key, *previous_keys) if key)
        if self.fmt == PICKLE and self._signing is None:
            raise ValueError("the pickle serializer needs a signing key")

    @property
    def signs(self) -> bool:
        return self._signing is not None

    def check(self, value: Any) -> None:
        """Raise :class:`NotData` unless the JSON serializer can store ``value`` (a no-op for pickle)."""
        if self.fmt == JSON:
            _dumps(value)

    def encode(self, value: Any, expires_at: float, tags: tuple[str, ...], write_id: int) -> bytes:
        blob = TAG_SEPARATOR.join(tags).encode() if tags else b""
        body = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL) if self.fmt == PICKLE else _dumps(value)
        if self._signing is None:
            return _HEAD.pack(self.fmt, expires_at, write_id, len(blob)) + blob + body
        head = _HEAD.pack(self.fmt | SIGNED, expires_at, write_id, len(blob)) + blob
        return head + hmac.digest(self._signing, head + body, "sha256") + body

    def decode(self, raw: bytes) -> tuple[Any, float, tuple[str, ...], int]:
        """Return ``(value, expires_at, tags, write_id)``; raise :class:`DecodeError` (or :class:`RefusedEntry`) otherwise."""
        try:
            fmt, expires_at, write_id, length = _HEAD.unpack_from(raw)
            start = _HEAD.size
            tags = tuple(raw[start : start + length].decode().split(TAG_SEPARATOR)) if length else ()
            body_at = start + length
            kind = fmt & ~SIGNED
            if kind not in (JSON, PICKLE):
                if kind == LEGACY_PICKLE:
                    raise RefusedEntry("pickle-not-allowed", "an unsigned pickle (format 1) is never loaded")
                raise DecodeError(f"unknown format byte {fmt}")
            if fmt & SIGNED:
                mac = raw[body_at : body_at + MAC_SIZE]
                body_at += MAC_SIZE
                if self._keys:
                    signed = raw[: start + length] + raw[body_at:]
                    if not any(hmac.compare_digest(mac, hmac.digest(key, signed, "sha256")) for key in self._keys):
                        raise RefusedEntry("bad-signature", "its signature does not match cache.signing_key")
                elif kind == PICKLE:
                    raise RefusedEntry("pickle-not-allowed", "a pickle cannot be authenticated without cache.signing_key")
            elif self._keys:
                raise RefusedEntry("unsigned", "it is unsigned and cache.signing_key is set")
            body = memoryview(raw)[body_at:]
            # A pickle got here only if authenticated above: written by a holder of the signing key.
            value = pickle.loads(body) if kind == PICKLE else json.loads(bytes(body))
        except DecodeError:
            raise
        except Exception as error:
            raise DecodeError(str(error)) from error
        return value, expires_at, tags, write_id


def _dumps(value: Any) -> bytes:
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
    except (TypeError, ValueError) as error:
        raise NotData(
            f"not JSON data ({error}): cache values are dicts, lists, strings, numbers, booleans and None; "
            "convert it to a plain dict at the cache boundary, or set cache.serializer = 'pickle' with a cache.signing_key"
        ) from None
