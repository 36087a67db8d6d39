"""The in-process layer: a bounded LRU of Python objects with expiry and a tag index."""

from __future__ import annotations

from collections import OrderedDict
from time import monotonic
from typing import Any

from ._stats import NamespaceStats

MISS: Any = type("Miss", (), {"__repr__": lambda self: "MISS", "__slots__": ()})()
"""Returned by lookups that found nothing (``None`` is a value that can be cached)."""

NEVER = float("inf")


class MemoryLayer:
    """An LRU bounded by entry count. Values are stored as given: treat cached objects as immutable.

    Each entry is ``(value, expires_at (monotonic), tags, stats)``; ``stats`` is the namespace's
    counters so an eviction is charged to the namespace that lost the entry.
    """

    __slots__ = ("_entries", "_tags", "max_entries")

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[str, tuple[Any, float, tuple[str, ...], NamespaceStats]] = OrderedDict()
        self._tags: dict[str, set[str]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, full: str) -> Any:
        entry = self._entries.get(full)
        if entry is None:
            return MISS
        if entry[1] <= monotonic():
            self._remove(full, entry)
            entry[3].expirations += 1
            return MISS
        self._entries.move_to_end(full)
        return entry[0]

    def put(self, full: str, value: Any, expires_at: float, tags: tuple[str, ...], stats: NamespaceStats) -> None:
        entries = self._entries
        old = entries.pop(full, None)
        if old is not None and old[2]:
            self._untag(full, old[2])
        entries[full] = (value, expires_at, tags, stats)
        for tag in tags:
            members = self._tags.get(tag)
            if members is None:
                self._tags[tag] = {full}
            else:
                members.add(full)
        if len(entries) > self.max_entries:
            self._shrink()

    def drop(self, full: str) -> bool:
        entry = self._entries.get(full)
        if entry is None:
            return False
        self._remove(full, entry)
        return True

    def drop_tags(self, tags: tuple[str, ...] | list[str]) -> int:
        dropped = 0
        for tag in tags:
            for full in self._tags.pop(tag, ()):
                entry = self._entries.get(full)
                if entry is not None:
                    self._remove(full, entry)
                    dropped += 1
        return dropped

    def clear(self) -> None:
        self._entries.clear()
        self._tags.clear()

    def resize(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._shrink()

    def _shrink(self) -> None:
        entries = self._entries
        now = monotonic()
        while len(entries) > self.max_entries:
            full, entry = entries.popitem(last=False)
            if entry[2]:
                self._untag(full, entry[2])
            if entry[1] <= now:
                entry[3].expirations += 1
            else:
                entry[3].evictions += 1

    def _remove(self, full: str, entry: tuple[Any, float, tuple[str, ...], NamespaceStats]) -> None:
        del self._entries[full]
        if entry[2]:
            self._untag(full, entry[2])

    def _untag(self, full: str, tags: tuple[str, ...]) -> None:
        for tag in tags:
            members = self._tags.get(tag)
            if members is not None:
                members.discard(full)
                if not members:
                    del self._tags[tag]
