"""Small helpers shared by the kernel's modules."""

from __future__ import annotations

import inspect
from typing import Any


async def await_me_maybe(value: Any) -> Any:
    """Return ``value``, awaited first if it is awaitable (hook implementations may be sync or async)."""
    if inspect.isawaitable(value):
        value = await value
    return value


def flatten(mapping: Any, prefix: str = "") -> dict[str, Any]:
    """Flatten nested mappings into dotted keys: ``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    flat: dict[str, Any] = {}
    if isinstance(mapping, dict):
        for key, value in mapping.items():
            dotted = f"{prefix}.{key}" if prefix else str(key)
            if isinstance(value, dict) and value:
                flat.update(flatten(value, dotted))
            else:
                flat[dotted] = value
    return flat
