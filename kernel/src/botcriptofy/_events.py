"""Typed events, their envelopes, and the bus that delivers them to handlers."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from pydantic import BaseModel, ConfigDict

from ._util import await_me_maybe

if TYPE_CHECKING:
    from ._kernel import Kernel

log = logging.getLogger("botcriptofy.events")

_EVENT_TYPES: dict[str, type[Event]] = {}


class Event(BaseModel):
    """Base class of typed events. Subclasses set ``event_type`` to a unique dotted name.

    ``class PaymentFailed(Event): event_type = "billing.payment_failed"``
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_type: ClassVar[str] = ""

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        if cls.event_type:
            known = _EVENT_TYPES.get(cls.event_type)
            if known is not None and known.__qualname__ != cls.__qualname__:
                raise TypeError(f"event type '{cls.event_type}' is declared twice: by {known!r} and by {cls!r}")
            _EVENT_TYPES[cls.event_type] = cls


def event_class(event_type: str) -> type[Event] | None:
    """Return the class registered for ``event_type``, if its module has been imported."""
    return _EVENT_TYPES.get(event_type)


@dataclass(frozen=True, slots=True)
class Envelope:
    """An event as stored and delivered: its payload plus identity, time and delivery attempt.

    Handlers drop duplicates by ``idempotency_key``: delivery is at least once.
    """

    id: str
    type: str
    payload: dict[str, Any]
    idempotency_key: str
    occurred_at: datetime
    tenant_id: str | None = None
    attempt: int = 1

    @property
    def event(self) -> Event | None:
        """The typed event, or None when no class is registered for ``type``."""
        cls = _EVENT_TYPES.get(self.type)
        return cls.model_validate(self.payload) if cls is not None else None

    @classmethod
    def wrap(cls, event: Event, *, idempotency_key: str | None = None, tenant_id: str | None = None) -> Envelope:
        if not event.event_type:
            raise TypeError(f"{type(event).__name__} has no event_type; set the class attribute event_type")
        event_id = str(uuid.uuid4())
        return cls(
            id=event_id,
            type=event.event_type,
            payload=event.model_dump(mode="json"),
            idempotency_key=idempotency_key or event_id,
            occurred_at=datetime.now(UTC),
            tenant_id=tenant_id,
        )


@dataclass(frozen=True, slots=True)
class EventHandler:
    """A subscription: ``handle`` is called with each :class:`Envelope` whose type is in ``events``.

    ``name`` must be stable across restarts: the outbox records delivery per handler name.
    ``events`` holds event classes or type names; ``"*"`` matches every event.
    """

    name: str
    handle: Callable[[Envelope], Awaitable[None] | None]
    events: tuple[type[Event] | str, ...] = ("*",)
    types: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        names = frozenset(e if isinstance(e, str) else e.event_type for e in self.events)
        object.__setattr__(self, "types", names)

    def matches(self, event_type: str) -> bool:
        return "*" in self.types or event_type in self.types


class Outbox(Protocol):
    """A transactional outbox (provided by the storage plugin through ``event_outbox``)."""

    async def add(self, envelopes: Sequence[Envelope], *, session: Any | None = None) -> None:
        """Store ``envelopes`` in ``session``'s transaction (or a transaction of its own) for delivery after commit."""
        ...


class EventBus:
    """Publishes events and delivers them to one generation's handlers, each in isolation."""

    def __init__(self, kernel: Kernel, handlers: Iterable[EventHandler]) -> None:
        self._kernel = kernel
        self.handlers: tuple[EventHandler, ...] = tuple(handlers)

    async def publish(
        self,
        event: Event,
        *,
        session: Any | None = None,
        idempotency_key: str | None = None,
        tenant_id: str | None = None,
    ) -> Envelope:
        """Publish ``event``.

        With an outbox (the storage plugin), the event is written in ``session``'s transaction
        and delivered after it commits; without ``session`` it is written in a transaction of its
        own. Without an outbox it is delivered in process right away.
        """
        envelope = Envelope.wrap(event, idempotency_key=idempotency_key, tenant_id=tenant_id)
        outbox = self._kernel.outbox()
        if outbox is not None:
            await outbox.add([envelope], session=session)
        else:
            if session is not None:
                raise RuntimeError("an event was published in a transaction but no plugin provides an outbox; enable the storage plugin")
            await self.deliver(envelope)
        return envelope

    def handler_names(self, event_type: str) -> list[str]:
        return [h.name for h in self.handlers if h.matches(event_type)]

    async def deliver(self, envelope: Envelope, *, only: Iterable[str] | None = None) -> dict[str, BaseException | None]:
        """Call every matching handler (or those named in ``only``); return each one's failure or None."""
        wanted = None if only is None else set(only)
        outcome: dict[str, BaseException | None] = {}
        for handler in self.handlers:
            if not handler.matches(envelope.type) or (wanted is not None and handler.name not in wanted):
                continue
            try:
                await await_me_maybe(handler.handle(envelope))
            except Exception as error:
                log.exception("event handler failed", extra={"handler": handler.name, "event_type": envelope.type, "event_id": envelope.id})
                outcome[handler.name] = error
            else:
                outcome[handler.name] = None
        return outcome
