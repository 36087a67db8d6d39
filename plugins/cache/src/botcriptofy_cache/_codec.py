"""How an entry is stored in Redis: a small header (format, expiry, tags) and the encoded value.

The header lets a worker that reads an entry from Redis keep its in-process copy no longer than the
Redis entry lives and index it under its tags, so a tag invalidation published by another worker
drops it. The write id (random, also carried by the invalidation message of the write) tells a
worker whether a message that arrived while it was reading concerns the very value it read. The
format byte is read back from each entry, so changing ``cache.serializer`` live never makes
existing entries unreadable.
"""

from __future__ import annotations

import json
import pickle
import struct
from typing import Any

_HEAD = struct.Struct(">BdqH")  # format, expires_at (epoch seconds, 0 = never), write id, length of the tag blob
PICKLE = 1
JSON = 2
FORMATS = {"pickle": PICKLE, "json": JSON}
TAG_SEPARATOR = "\x1f"


class DecodeError(ValueError):
    """An entry that is not in this codec's format (written by something else, or corrupt)."""


def encode(value: Any, expires_at: float, tags: tuple[str, ...], fmt: int, write_id: int) -> bytes:
    blob = TAG_SEPARATOR.join(tags).encode() if tags else b""
    if fmt == PICKLE:
        body = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    else:
        body = json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
    return _HEAD.pack(fmt, expires_at, write_id, len(blob)) + blob + body


def decode(raw: bytes) -> tuple[Any, float, tuple[str, ...], int]:
    """Return ``(value, expires_at, tags, write_id)``; raise :class:`DecodeError` for anything unreadable."""
    try:
        fmt, expires_at, write_id, length = _HEAD.unpack_from(raw)
        start = _HEAD.size
        tags = tuple(raw[start:start + length].decode().split(TAG_SEPARATOR)) if length else ()
        body = memoryview(raw)[start + length:]
        if fmt == PICKLE:
            value = pickle.loads(body)
        elif fmt == JSON:
            value = json.loads(bytes(body))
        else:
            raise DecodeError(f"unknown format byte {fmt}")
    except DecodeError:
        raise
    except Exception as error:
        raise DecodeError(str(error)) from error
    return value, expires_at, tags, write_id
