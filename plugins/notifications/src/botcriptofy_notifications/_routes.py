"""HTTP: the caller's inbox and preferences, the delivery log for operators, and the staff command registry."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import sqlalchemy as sa
from pydantic import BaseModel, Field, field_validator
from starlette.requests import Request
from starlette.routing import BaseRoute

from botcriptofy import Actor, ProblemError, Route, kernel_of, require

from ._models import DEAD, FAILED, QUEUED, STATUSES, deliveries, inbox, preferences, utcnow
from ._state import settings_of, state_of

MANAGE = "configuration:notifications"
_HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")


class InboxItem(BaseModel):
    id: int
    category: str
    severity: str
    subject: str
    body: str
    actions: list[dict[str, Any]]
    created_at: datetime
    read_at: datetime | None


class InboxQuery(BaseModel):
    unread: bool = False
    limit: int = Field(50, ge=1, le=200)
    before: int | None = Field(None, ge=1, description="Items older than this id (paging).")


class InboxOut(BaseModel):
    items: list[InboxItem]
    unread: int


class ReadOut(BaseModel):
    marked: int


class Preferences(BaseModel):
    locale: Literal["pt-BR", "en"] | None = None
    timezone: str = "America/Sao_Paulo"
    quiet_start: str | None = Field(None, description="HH:MM; with quiet_end, non-critical notifications are held back between them.")
    quiet_end: str | None = None
    channels: dict[str, list[str]] = Field(
        default_factory=dict, description="Category pattern (billing.*, *) to the channels that carry it."
    )

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone '{value}' (use an IANA name such as America/Sao_Paulo)") from None
        return value

    @field_validator("quiet_start", "quiet_end")
    @classmethod
    def _hhmm(cls, value: str | None) -> str | None:
        if value is not None and not _HHMM.match(value):
            raise ValueError("use HH:MM (24 hours)")
        return value


class DeliveryOut(BaseModel):
    id: int
    notification_id: str
    channel: str
    address: str
    target: str
    category: str
    severity: str
    status: str
    attempts: int
    last_error: str | None
    created_at: datetime
    sent_at: datetime | None
    next_attempt_at: datetime


class DeliveryQuery(BaseModel):
    status: str | None = None
    channel: str | None = None
    limit: int = Field(100, ge=1, le=1000)

    @field_validator("status")
    @classmethod
    def _status(cls, value: str | None) -> str | None:
        if value is not None and value not in STATUSES:
            raise ValueError(f"one of {', '.join(STATUSES)}")
        return value


class CommandOut(BaseModel):
    name: str
    description: str
    usage: str
    permission: str | None
    arguments: dict[str, Any] | None


class CommandIn(BaseModel):
    arguments: dict[str, Any] = Field(default_factory=dict)
    locale: Literal["pt-BR", "en"] = "pt-BR"


class CommandResult(BaseModel):
    text: str
    buttons: list[dict[str, Any]]
    data: dict[str, Any]


def _user(actor: Actor) -> tuple[str, str]:
    if actor.tenant_id is None:
        raise ProblemError(403, "Forbidden", "Only accounts of a tenant have an inbox.")
    return actor.id, actor.tenant_id


async def list_inbox(request: Request, query: InboxQuery) -> InboxOut:
    """The caller's in-app notifications, newest first."""
    actor = await require(request)
    user_id, tenant_id = _user(actor)
    kernel = kernel_of(request)
    async with kernel.database().session(tenant_id=tenant_id) as session:
        statement = sa.select(inbox).where(inbox.c.user_id == user_id).order_by(inbox.c.id.desc()).limit(query.limit)
        if query.unread:
            statement = statement.where(inbox.c.read_at.is_(None))
        if query.before is not None:
            statement = statement.where(inbox.c.id < query.before)
        rows = (await session.execute(statement)).all()
        unread = (
            await session.execute(sa.select(sa.func.count()).where(inbox.c.user_id == user_id, inbox.c.read_at.is_(None)))
        ).scalar_one()
    items = [InboxItem(**{k: getattr(r, k) for k in InboxItem.model_fields}) for r in rows]
    return InboxOut(items=items, unread=int(unread))


async def mark_read(request: Request) -> ReadOut:
    """Mark one notification read."""
    actor = await require(request)
    user_id, tenant_id = _user(actor)
    raw = request.path_params["item"]
    if not str(raw).isdigit():
        raise ProblemError(
            422,
            "Validation failed",
            "The notification id must be a number.",
            errors=[{"field": "item", "message": "not a number", "in": "path"}],
        )
    async with kernel_of(request).database().session(tenant_id=tenant_id) as session:
        result = await session.execute(
            sa.update(inbox).where(inbox.c.id == int(raw), inbox.c.user_id == user_id, inbox.c.read_at.is_(None)).values(read_at=utcnow())
        )
        if not result.rowcount:
            found = (await session.execute(sa.select(inbox.c.id).where(inbox.c.id == int(raw), inbox.c.user_id == user_id))).first()
            if found is None:
                raise ProblemError(404, "Not found", f"You have no notification {raw}.")
    return ReadOut(marked=result.rowcount or 0)


async def mark_all_read(request: Request) -> ReadOut:
    """Mark every notification of the caller read."""
    actor = await require(request)
    user_id, tenant_id = _user(actor)
    async with kernel_of(request).database().session(tenant_id=tenant_id) as session:
        result = await session.execute(
            sa.update(inbox).where(inbox.c.user_id == user_id, inbox.c.read_at.is_(None)).values(read_at=utcnow())
        )
    return ReadOut(marked=result.rowcount or 0)


async def get_preferences(request: Request) -> Preferences:
    """The caller's notification preferences."""
    actor = await require(request)
    user_id, tenant_id = _user(actor)
    async with kernel_of(request).database().session(tenant_id=tenant_id) as session:
        row = (await session.execute(sa.select(preferences).where(preferences.c.user_id == user_id))).first()
    if row is None:
        return Preferences()
    return Preferences(
        locale=row.locale, timezone=row.timezone, quiet_start=row.quiet_start, quiet_end=row.quiet_end, channels=row.channels
    )


async def put_preferences(request: Request, body: Preferences) -> Preferences:
    """Replace the caller's notification preferences."""
    actor = await require(request)
    user_id, tenant_id = _user(actor)
    if (body.quiet_start is None) != (body.quiet_end is None):
        raise ProblemError(
            422,
            "Validation failed",
            "Give both quiet_start and quiet_end, or neither.",
            errors=[{"field": "quiet_end" if body.quiet_end is None else "quiet_start", "message": "both or neither", "in": "body"}],
        )
    values = {**body.model_dump(), "tenant_id": tenant_id, "updated_at": utcnow()}
    async with kernel_of(request).database().session(tenant_id=tenant_id, write_lock=True) as session:
        updated = await session.execute(sa.update(preferences).where(preferences.c.user_id == user_id).values(**values))
        if not updated.rowcount:
            await session.execute(sa.insert(preferences).values(user_id=user_id, **values))
    return body


async def list_deliveries(request: Request, query: DeliveryQuery) -> list[DeliveryOut]:
    """The delivery log, newest first (dead letters with ?status=dead)."""
    statement = sa.select(deliveries).order_by(deliveries.c.id.desc()).limit(query.limit)
    if query.status is not None:
        statement = statement.where(deliveries.c.status == query.status)
    if query.channel is not None:
        statement = statement.where(deliveries.c.channel == query.channel)
    async with kernel_of(request).database().session(system=True) as session:
        rows = (await session.execute(statement)).all()
    return [DeliveryOut(**{k: getattr(r, k) for k in DeliveryOut.model_fields}) for r in rows]


async def retry_delivery(request: Request) -> DeliveryOut:
    """Queue a dead or failed delivery again."""
    raw = request.path_params["delivery"]
    if not str(raw).isdigit():
        raise ProblemError(
            422,
            "Validation failed",
            "The delivery id must be a number.",
            errors=[{"field": "delivery", "message": "not a number", "in": "path"}],
        )
    kernel = kernel_of(request)
    async with kernel.database().session(system=True, write_lock=True) as session:
        row = (await session.execute(sa.select(deliveries).where(deliveries.c.id == int(raw)))).first()
        if row is None:
            raise ProblemError(404, "Not found", f"There is no delivery {raw}.")
        if row.status not in (DEAD, FAILED):
            raise ProblemError(409, "Not retryable", f"Delivery {raw} is {row.status}; only dead or failed deliveries are retried.")
        await session.execute(
            sa.update(deliveries)
            .where(deliveries.c.id == row.id)
            .values(status=QUEUED, attempts=0, next_attempt_at=utcnow(), locked_by=None, locked_until=None)
        )
        row = (await session.execute(sa.select(deliveries).where(deliveries.c.id == int(raw)))).first()
    dispatcher = state_of(kernel).dispatcher
    if dispatcher is not None:
        dispatcher.wake()
    return DeliveryOut(**{k: getattr(row, k) for k in DeliveryOut.model_fields})


async def list_commands(request: Request) -> list[CommandOut]:
    """The staff commands the caller may run."""
    actor = await require(request)
    kernel = kernel_of(request)
    locale = "en" if request.headers.get("accept-language", "").lower().startswith("en") else settings_of(kernel).default_locale
    out = []
    for command in sorted((await kernel.staff_commands()).values(), key=lambda c: c.name):
        if command.permission is None or actor.can(command.permission):
            schema = command.arguments.model_json_schema() if command.arguments is not None else None
            out.append(
                CommandOut(
                    name=command.name,
                    description=command.describe(locale),
                    usage=command.usage(),
                    permission=command.permission,
                    arguments=schema,
                )
            )
    return out


async def run_command(request: Request, body: CommandIn) -> CommandResult:
    """Run a staff command, with the same permission check as in Telegram."""
    actor = await require(request)
    name = request.path_params["name"]
    reply = await kernel_of(request).run_staff_command(name, actor=actor, arguments=body.arguments, channel="http", locale=body.locale)
    buttons = [{"label": b.label, "url": b.url, "callback": b.callback, "style": b.style} for b in reply.buttons]
    return CommandResult(text=reply.text, buttons=buttons, data=dict(reply.data))


def routes() -> list[BaseRoute]:
    tags = ["notifications"]
    staff = ["staff"]
    problems = {401: "Unauthorized", 403: "Forbidden"}
    return [
        Route("/v1/notifications", list_inbox, query=InboxQuery, response=InboxOut, authenticated=True, tags=tags, responses=problems),
        Route(
            "/v1/notifications/read-all",
            mark_all_read,
            methods=["POST"],
            response=ReadOut,
            authenticated=True,
            tags=tags,
            responses=problems,
        ),
        Route("/v1/notifications/preferences", get_preferences, response=Preferences, authenticated=True, tags=tags, responses=problems),
        Route(
            "/v1/notifications/preferences",
            put_preferences,
            methods=["PUT"],
            body=Preferences,
            response=Preferences,
            authenticated=True,
            tags=tags,
            responses=problems,
            name="put_preferences",
        ),
        Route(
            "/v1/notifications/{item}/read",
            mark_read,
            methods=["POST"],
            response=ReadOut,
            authenticated=True,
            tags=tags,
            responses={**problems, 404: "Not found"},
        ),
        Route(
            "/v1/admin/notifications/deliveries",
            list_deliveries,
            query=DeliveryQuery,
            response=list[DeliveryOut],
            permission=MANAGE,
            tags=["admin"],
            responses=problems,
        ),
        Route(
            "/v1/admin/notifications/deliveries/{delivery}/retry",
            retry_delivery,
            methods=["POST"],
            response=DeliveryOut,
            permission=MANAGE,
            tags=["admin"],
            responses={**problems, 404: "Not found", 409: "Not retryable"},
        ),
        Route("/v1/staff/commands", list_commands, response=list[CommandOut], authenticated=True, tags=staff, responses=problems),
        Route(
            "/v1/staff/commands/{name}",
            run_command,
            methods=["POST"],
            body=CommandIn,
            response=CommandResult,
            authenticated=True,
            tags=staff,
            responses={**problems, 404: "Unknown command", 422: "Invalid arguments"},
        ),
    ]
