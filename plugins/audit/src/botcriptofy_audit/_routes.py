"""``GET /v1/audit`` (a tenant's own trail; the audit department reads all), verification and signed export."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import BaseRoute

from botcriptofy import ProblemError, Route, current_actor, kernel_of

from . import _chain, _service
from ._state import settings_of, state_of

READ_ALL = "audit:read"
VERIFY = "audit:verify"
EXPORT = "audit:export"
TIME = r"^\d{4}-\d{2}-\d{2}(T[0-9:.]+Z?)?$"
TEXT = r"^[^\x00-\x1f]*$"  # no control characters (PostgreSQL refuses NUL in text)
LARGEST_ID = 2**62


class TrailQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    limit: int | None = Field(None, ge=1, le=1000, description="Entries per page (default audit.page_size).")
    before: int | None = Field(None, ge=1, le=LARGEST_ID, description="The 'next' cursor of the previous page.")
    action: str | None = Field(None, max_length=64, pattern=TEXT, description="Only actions starting with this (auth.login, billing.).")
    actor_id: str | None = Field(None, max_length=64, pattern=TEXT)
    subject: str | None = Field(None, max_length=64, pattern=TEXT)
    tenant_id: str | None = Field(None, max_length=64, pattern=TEXT, description="Audit department only: one tenant's entries.")
    chain: str | None = Field(
        None, max_length=64, pattern=TEXT, description="Audit department only: one chain ('platform' or a tenant id)."
    )
    since: str | None = Field(None, pattern=TIME, description="ISO 8601 UTC time, inclusive.")
    until: str | None = Field(None, pattern=TIME, description="ISO 8601 UTC time, exclusive.")


class VerifyQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tenant: str | None = Field(
        None, max_length=64, pattern=TEXT, description="Verify only this tenant's chain ('platform' for the platform's)."
    )


class ExportQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    chain: str | None = Field(None, max_length=64, pattern=TEXT)
    since: str | None = Field(None, pattern=TIME)
    until: str | None = Field(None, pattern=TIME)


async def trail(request: Request, *, query: TrailQuery) -> dict[str, Any]:
    """Read the audit trail: your tenant's entries, or every entry for the audit department."""
    kernel = kernel_of(request)
    actor = await current_actor(request)
    assert actor is not None
    everything = actor.can(READ_ALL)
    if not everything and (query.tenant_id or query.chain):
        raise ProblemError(
            403,
            "Forbidden",
            "Only the audit department (permission audit:read) filters by tenant or chain; you see your own tenant's trail.",
            errors=[
                {"field": "tenant_id" if query.tenant_id else "chain", "message": "needs audit:read", "type": "forbidden", "in": "query"}
            ],
        )
    if not everything and actor.tenant_id is None:
        raise ProblemError(403, "Forbidden", "This caller belongs to no tenant and lacks audit:read.")
    page, following = await _service.list_entries(
        kernel.database(),
        tenant_id=query.tenant_id if everything else actor.tenant_id,
        everything=everything,
        limit=query.limit or settings_of(kernel).page_size,
        before=query.before,
        action=query.action,
        actor_id=query.actor_id,
        subject=query.subject,
        chain=query.chain,
        since=query.since,
        until=query.until,
    )
    return {"entries": page, "next": following}


async def verify(request: Request, *, query: VerifyQuery) -> dict[str, Any]:
    """Verify the hash chains and signed checkpoints; name the first entry changed, removed, inserted or reordered."""
    kernel = kernel_of(request)
    state = state_of(kernel)
    report = await _chain.verify(kernel.database(), state.keyring, chain=query.tenant)
    actor = await current_actor(request)
    await kernel.audit(
        "audit.verified",
        actor=actor,
        tenant_id=None,
        outcome="success" if report["valid"] else "failure",
        request_id=request.headers.get("x-request-id"),
        client_address=request.client.host if request.client else None,
        details={"chain": query.tenant, "entries": report["entries"], "first_problem": report["first_problem"]},
    )
    return report


async def export(request: Request, *, query: ExportQuery) -> StreamingResponse:
    """Export entries as signed JSON Lines: one entry per line, then a line signing their SHA-256."""
    kernel = kernel_of(request)
    state = state_of(kernel)
    lines = _service.export_lines(kernel.database(), state.keyring, chain=query.chain, since=query.since, until=query.until)
    return StreamingResponse(lines, media_type="application/jsonl")


def routes() -> list[BaseRoute]:
    return [
        Route(
            "/v1/audit",
            trail,
            query=TrailQuery,
            authenticated=True,
            tags=["audit"],
            name="audit_trail",
            responses={403: "Filtering by tenant or chain needs audit:read"},
        ),
        Route("/v1/admin/audit/verify", verify, query=VerifyQuery, permission=VERIFY, tags=["audit"], name="audit_verify"),
        Route("/v1/admin/audit/export", export, query=ExportQuery, permission=EXPORT, tags=["audit"], name="audit_export"),
    ]
