"""The kernel's fallback cache: in-process, bounded, with TTLs and tags. The cache plugin replaces it."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any


class LocalCache:
    """A small LRU cache used when no plugin provides ``cache_backend``; it is not shared between processes."""

    def __init__(self, max_entries: int = 10_000) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[str, tuple[Any, float | None, frozenset[str]]] = OrderedDict()
        self._tags: dict[str, set[str]] = {}

    async def get(self, key: str, *, namespace: str = "default") -> Any | None:
        full = f"{namespace}:{key}"
        entry = self._entries.get(full)
        if entry is None:
            return None
        value, expires, _ = entry
        if expires is not None and expires <= time.monotonic():
            self._drop(full)
            return None
        self._entries.move_to_end(full)
        return value

    async def set(self, key: str, value: Any, *, ttl: float | None = None, tags: Iterable[str] = (), namespace: str = "default") -> None:
        full = f"{namespace}:{key}"
        self._drop(full)
        tag_set = frozenset(tags)
        self._entries[full] = (value, time.monotonic() + ttl if ttl else None, tag_set)
        for tag in tag_set:
            self._tags.setdefault(tag, set()).add(full)
        while len(self._entries) > self.max_entries:
            self._drop(next(iter(self._entries)))

    async def delete(self, key: str, *, namespace: str = "default") -> None:
        self._drop(f"{namespace}:{key}")

    async def invalidate_tags(self, *tags: str) -> None:
        for tag in tags:
            for full in list(self._tags.pop(tag, ())):
                self._drop(full)

    def _drop(self, full: str) -> None:
        entry = self._entries.pop(full, None)
        if entry is not None:
            for tag in entry[2]:
                members = self._tags.get(tag)
                if members is not None:
                    members.discard(full)
                    if not members:
                        del self._tags[tag]
