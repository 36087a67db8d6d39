"""Who background work runs as: the actor the kernel sets around event handlers and commands.

A request knows its caller (:func:`botcriptofy.current_actor`); an event handler, a scheduled job
or a command has none, so the kernel runs it inside :func:`acting_as` with a service principal
(``kernel.service_actor(name)``), and code that checks permissions or writes an audit trail reads
it with :func:`acting_actor`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from ._types import Actor

_ACTING: ContextVar[Actor | None] = ContextVar("botcriptofy_acting_actor", default=None)


def acting_actor() -> Actor | None:
    """Return the actor the current background work runs as (None inside a request or outside the kernel's calls)."""
    return _ACTING.get()


@contextmanager
def acting_as(actor: Actor | None) -> Iterator[Actor | None]:
    """Run the block as ``actor``; tasks started inside it inherit the actor (context variables are copied)."""
    token = _ACTING.set(actor)
    try:
        yield actor
    finally:
        _ACTING.reset(token)
