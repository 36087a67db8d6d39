"""A typed key-value store that plugins use to keep state on a kernel generation."""

from __future__ import annotations

from typing import Any, Generic, TypeVar, cast

T = TypeVar("T")
D = TypeVar("D")


class StashKey(Generic[T]):
    """A key for :class:`Stash`; create one per value at module level."""

    __slots__ = ("name",)

    def __init__(self, name: str = "") -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"StashKey({self.name!r})"


class Stash:
    """Typed storage keyed by :class:`StashKey` objects, so plugins cannot collide by name.

    Each kernel generation has its own stash, started as a copy of the previous generation's:
    a plugin restarted by a configuration change writes its new state into the new generation
    while requests still running on the old generation keep seeing the old state.
    """

    __slots__ = ("_data",)

    def __init__(self, data: dict[StashKey[Any], Any] | None = None) -> None:
        self._data: dict[StashKey[Any], Any] = dict(data or {})

    def __setitem__(self, key: StashKey[T], value: T) -> None:
        self._data[key] = value

    def __getitem__(self, key: StashKey[T]) -> T:
        return cast(T, self._data[key])

    def get(self, key: StashKey[T], default: D) -> T | D:
        return cast(T, self._data[key]) if key in self._data else default

    def setdefault(self, key: StashKey[T], default: T) -> T:
        return cast(T, self._data.setdefault(key, default))

    def __delitem__(self, key: StashKey[T]) -> None:
        del self._data[key]

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __len__(self) -> int:
        return len(self._data)

    def copy(self) -> Stash:
        return Stash(self._data)
