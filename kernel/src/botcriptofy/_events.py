"""Typed events, their envelopes, and the bus that delivers them to handlers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, cast

from pydantic import BaseModel, ConfigDict

from ._acting import acting_as
from ._util import await_me_maybe, random_uuid

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


class ConfigApplied(Event):
    """The runtime applied a configuration change: a saved file, an API change or a rollback.

    ``started`` and ``stopped`` name the plugins switched on and off; ``rollback_to`` is the
    version a rollback restored.
    """

    event_type = "kernel.config_applied"

    version: int | None
    generation: int
    source: str
    rollback_to: int | None = None
    started: list[str] = []
    stopped: list[str] = []
    restarted: list[str] = []
    reconfigured: list[str] = []


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
    # Carried with the event through the outbox: entries added by the ``event_metadata`` hook (trace context).
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def event(self) -> Event | None:
        """The typed event, or None when no class is registered for ``type``."""
        cls = _EVENT_TYPES.get(self.type)
        return cls.model_validate(self.payload) if cls is not None else None

    @classmethod
    def wrap(
        cls, event: Event, *, idempotency_key: str | None = None, tenant_id: str | None = None, metadata: dict[str, str] | None = None
    ) -> Envelope:
        if not event.event_type:
            raise TypeError(f"{type(event).__name__} has no event_type; set the class attribute event_type")
        return cls.of(
            event.event_type, event.model_dump(mode="json"), idempotency_key=idempotency_key, tenant_id=tenant_id, metadata=metadata
        )

    @classmethod
    def of(
        cls,
        event_type: str,
        payload: dict[str, Any],
        *,
        idempotency_key: str | None = None,
        tenant_id: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> Envelope:
        """A new envelope of ``payload`` (already JSON data, as ``event_type``'s model would dump it)."""
        event_id = random_uuid()
        return cls(
            id=event_id,
            type=event_type,
            payload=payload,
            idempotency_key=idempotency_key or event_id,
            occurred_at=datetime.now(UTC),
            tenant_id=tenant_id,
            metadata=dict(metadata or {}),
        )


@dataclass(frozen=True, slots=True)
class EventHandler:
    """A subscription: ``handle`` is called with each :class:`Envelope` whose type is in ``events``.

    ``name`` must be stable across restarts: the outbox records delivery per handler name.
    ``events`` holds event classes or type names; ``"*"`` matches every event. ``plugin`` is set by
    the kernel to the plugin that registered the handler: the handler runs as that plugin's service
    actor (``kernel.service_actor(plugin)``, readable with :func:`botcriptofy.acting_actor`).
    ``detached``: with no outbox, the handler is called after the publisher's task lets the event loop
    run (events published meanwhile are delivered together), not inside ``publish``: for work that
    must stay off the request path (agents). With an outbox nothing changes: the relay calls it.
    """

    name: str
    handle: Callable[[Envelope], Awaitable[None] | None]
    events: tuple[type[Event] | str, ...] = ("*",)
    plugin: str | None = None
    detached: bool = False
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
        self._inline = frozenset(h.name for h in self.handlers if not h.detached)
        self._detached = frozenset(h.name for h in self.handlers if h.detached)
        # The event types some handler names (``"*"`` included as such): kernel.notify() asks on every call.
        self.named_types: frozenset[str] = frozenset().union(*(h.types for h in self.handlers))
        self._later: list[Envelope] = []
        self._draining: set[asyncio.Task[None]] = set()

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
        envelope = Envelope.wrap(event, idempotency_key=idempotency_key, tenant_id=tenant_id, metadata=self._metadata(event.event_type))
        await self.send(envelope, session=session)
        return envelope

    async def publish_payload(
        self, event_type: str, payload: dict[str, Any], *, session: Any | None = None, tenant_id: str | None = None
    ) -> Envelope:
        """Publish ``payload`` as ``event_type`` without building its model (the caller vouches it is that model's JSON dump).

        For the kernel's own hot paths (``kernel.notify``): the same envelope as :meth:`publish` would
        make, minus a validation and a dump of data that is already JSON.
        """
        envelope = Envelope.of(event_type, payload, tenant_id=tenant_id, metadata=self._metadata(event_type))
        await self.send(envelope, session=session)
        return envelope

    async def send(self, envelope: Envelope, *, session: Any | None = None) -> None:
        """Store ``envelope`` in the outbox (in ``session``'s transaction), or deliver it now when there is none."""
        outbox = self._kernel.outbox()
        if outbox is not None:
            await outbox.add([envelope], session=session)
        else:
            if session is not None:
                raise RuntimeError("an event was published in a transaction but no plugin provides an outbox; enable the storage plugin")
            if not self._detached:
                await self.deliver(envelope)
                return
            if self._inline:
                await self.deliver(envelope, only=self._inline)
            if not any(h.detached and h.matches(envelope.type) for h in self.handlers):
                return
            self._later.append(envelope)
            if len(self._later) == 1:
                asyncio.get_running_loop().call_soon(self._drain)

    async def idle(self) -> None:
        """Wait until the detached deliveries of events published so far have run (tests and benches)."""
        while self._later or self._draining:
            if self._draining:
                await asyncio.gather(*self._draining, return_exceptions=True)
            else:
                await asyncio.sleep(0)

    def _drain(self) -> None:
        task = asyncio.get_running_loop().create_task(self._deliver_later(), name="botcriptofy-detached-events")
        self._draining.add(task)
        task.add_done_callback(self._draining.discard)

    async def _deliver_later(self) -> None:
        envelopes, self._later = self._later, []
        for envelope in envelopes:
            await self.deliver(envelope, only=self._detached)

    def _metadata(self, event_type: str) -> dict[str, str]:
        """What the plugins' ``event_metadata`` hooks add to an event being published."""
        found: dict[str, str] = {}
        hook = self._kernel.hook.event_metadata
        for impl in hook.get_hookimpls():
            try:
                added = cast("dict[str, str] | None", impl.function(kernel=self._kernel, event_type=event_type))
            except Exception:
                log.exception("plugin '%s', hook 'event_metadata' failed", impl.plugin_name, extra={"plugin": impl.plugin_name})
                continue
            if added:
                found.update({str(key): str(value) for key, value in added.items()})
        return found

    def _delivery_contexts(self, envelope: Envelope, handler: EventHandler) -> list[AbstractContextManager[Any]]:
        found: list[AbstractContextManager[Any]] = []
        for impl in self._kernel.hook.event_delivery.get_hookimpls():
            try:
                context = cast("AbstractContextManager[Any] | None", impl.function(kernel=self._kernel, envelope=envelope, handler=handler))
            except Exception:
                log.exception("plugin '%s', hook 'event_delivery' failed", impl.plugin_name, extra={"plugin": impl.plugin_name})
                continue
            if context is not None:
                found.append(context)
        return found

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
                actor = await self._kernel.service_actor(handler.plugin) if handler.plugin is not None else None
                with acting_as(actor), ExitStack() as stack:
                    for context in self._delivery_contexts(envelope, handler):
                        try:
                            stack.enter_context(context)
                        except Exception:
                            log.exception("an event_delivery context failed to enter", extra={"handler": handler.name})
                    await await_me_maybe(handler.handle(envelope))
            except Exception as error:
                log.exception("event handler failed", extra={"handler": handler.name, "event_type": envelope.type, "event_id": envelope.id})
                outcome[handler.name] = error
            else:
                outcome[handler.name] = None
        return outcome


class NotificationRequested(Event):
    """The event ``kernel.notify`` publishes: the notifications plugin routes it to people and channels.

    Published through the transactional outbox when ``notify`` is given a session: committed, the
    notification is delivered at least once; rolled back, never.
    """

    event_type: ClassVar[str] = "kernel.notification_requested"

    notification: dict[str, Any]
