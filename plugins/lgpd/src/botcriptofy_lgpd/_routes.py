"""``/v1/privacy/...``: consents, exports, erasure, corrections, request status; ``/v1/admin/privacy/...`` for the DPO."""

from __future__ import annotations

import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from botcriptofy import Actor, ProblemError, Route, current_actor, kernel_of

from . import _consents, _requests
from ._exports import export_dir
from ._state import settings_of, state_of

OWN = "privacy:own"
DPO = "audit:privacy"
ONE_PERSON_TENANTS = ("trader", "influencer")
TEXT = r"^[^\x00-\x1f]*$"  # no control characters (PostgreSQL refuses NUL in text)


async def _request_row(request: Request) -> dict[str, Any] | None:
    """The request named in the path, or None (also for an id that is not a UUID)."""
    raw = request.path_params["request_id"]
    try:
        request_id = str(uuid.UUID(raw))
    except ValueError:
        return None
    return await _requests.get(kernel_of(request), request_id)


class ConsentChanges(BaseModel):
    model_config = ConfigDict(extra="forbid")

    consents: dict[str, bool] = Field(description="Purpose name → granted (true) or revoked (false).", max_length=50)
    channel: Literal["web", "mobile", "api", "support"] = "web"


class ErasureBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    password: str = Field(min_length=1, max_length=1024, description="Your password, checked again before erasing.")
    totp_code: str | None = Field(None, max_length=16, description="Your TOTP code, when two-factor authentication is on.")
    confirm: Literal[True] = Field(description="Must be true: erasure cannot be undone.")


class CorrectionBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    fields: dict[str, str] = Field(min_length=1, max_length=20, description="What is wrong and what it should be, by field.")
    note: str = Field("", max_length=2000)


class DownloadQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    token: str = Field(min_length=1, max_length=128)


class AdminListQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: Literal["received", "processing", "completed", "failed"] | None = None
    kind: Literal["export", "erasure", "correction", "revocation"] | None = None
    overdue: bool | None = None
    limit: int = Field(100, ge=1, le=500)


class CompleteBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: str = Field(min_length=1, max_length=2000)


class AdminErasureBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: str = Field(min_length=1, max_length=64, pattern=TEXT)
    tenant_id: str | None = Field(
        None, max_length=64, pattern=TEXT, description="The person's own tenant (trader or influencer); empty for staff."
    )
    email: str | None = Field(None, max_length=320, description="The person's e-mail, so copies of it in events are found.")
    reason: str = Field(min_length=1, max_length=500, description="How the request arrived (e-mail, letter, support ticket).")


async def _caller(request: Request) -> Actor:
    actor = await current_actor(request)
    if actor is None:
        raise ProblemError(401, "Unauthorized", "Log in first.")
    return actor


def _principal(actor: Actor) -> dict[str, Any]:
    principal = actor.attributes.get("principal")
    return principal if isinstance(principal, dict) else {}


def _client(request: Request) -> str | None:
    return request.client.host if request.client else None


async def get_consents(request: Request) -> dict[str, Any]:
    """Your consent per purpose, and the full history of your grants and revocations."""
    kernel = kernel_of(request)
    actor = await _caller(request)
    database = kernel.database()
    found = await _consents.overview(database, settings_of(kernel), actor.id)
    found["history"] = await _consents.history(database, actor.id)
    return found


async def put_consents(request: Request, *, body: ConsentChanges) -> dict[str, Any]:
    """Grant or revoke consent per purpose; each change is recorded with its evidence."""
    kernel = kernel_of(request)
    actor = await _caller(request)
    settings = settings_of(kernel)
    errors = []
    for name, granted in body.consents.items():
        purpose = settings.purposes.get(name)
        if purpose is None:
            errors.append(
                {
                    "field": f"consents.{name}",
                    "message": f"unknown purpose; use one of {', '.join(settings.purposes)}",
                    "type": "value_error",
                    "in": "body",
                }
            )
        elif purpose.required and not granted:
            errors.append(
                {
                    "field": f"consents.{name}",
                    "message": "is needed to provide the service; erase your account instead",
                    "type": "value_error",
                    "in": "body",
                }
            )
    if errors:
        raise ProblemError(422, "Validation failed", "Some consents cannot be changed.", errors=errors)
    database = kernel.database()
    changes = await _consents.record(
        database,
        settings,
        user_id=actor.id,
        tenant_id=actor.tenant_id,
        decisions=body.consents,
        channel=body.channel,
        client_address=_client(request),
    )
    for name, granted in changes:
        await kernel.audit(
            "privacy.consent_granted" if granted else "privacy.consent_revoked",
            actor=actor,
            target=f"consent:{name}",
            subject=actor.id,
            client_address=_client(request),
            request_id=request.headers.get("x-request-id"),
            details={"purpose": name, "policy_version": settings.purposes[name].policy_version, "channel": body.channel},
        )
    revoked = [name for name, granted in changes if not granted]
    if revoked:
        await _requests.create(
            kernel,
            user_id=actor.id,
            tenant_id=actor.tenant_id,
            kind="revocation",
            requested_by=actor.id,
            detail={"purposes": revoked},
            status="completed",
        )
    found = await _consents.overview(database, settings, actor.id)
    found["changed"] = [{"purpose": name, "granted": granted} for name, granted in changes]
    return found


async def create_export(request: Request) -> Response:
    """Ask for a copy of everything the platform holds about you (access and portability)."""
    kernel = kernel_of(request)
    actor = await _caller(request)
    row = await _requests.create(
        kernel, user_id=actor.id, tenant_id=actor.tenant_id, kind="export", requested_by=actor.id, detail=_detail(actor)
    )
    state_of(kernel).runner.submit(row["id"])  # type: ignore[attr-defined]
    return _json(_requests.present(kernel, row, owner=True), 202)


def _detail(actor: Actor) -> dict[str, Any]:
    principal = _principal(actor)
    owned = actor.tenant_id if principal.get("tenant_type") in ONE_PERSON_TENANTS else None
    return {"owned_tenant_id": owned}


def _json(content: Any, status: int) -> Response:
    import json

    return Response(json.dumps(content), status_code=status, media_type="application/json")


async def _own(request: Request) -> tuple[Actor, dict[str, Any]]:
    actor = await _caller(request)
    row = await _request_row(request)
    if row is None or ((row["user_id"] != actor.id or row["tenant_id"] != actor.tenant_id) and not actor.can(DPO)):
        raise ProblemError(404, "Not Found", "There is no such privacy request of yours.")
    return actor, row


async def download_export(request: Request, *, query: DownloadQuery) -> Response:
    """Download your export (a ZIP) while its link is valid."""
    kernel = kernel_of(request)
    actor = await _caller(request)
    row = await _request_row(request)
    if row is None or row["kind"] != "export" or row["user_id"] != actor.id or row["tenant_id"] != actor.tenant_id:
        raise ProblemError(404, "Not Found", "There is no such export of yours.")
    if row["status"] != "completed" or not row.get("file_name"):
        raise ProblemError(409, "Not ready", f"The export is {row['status']}; its status page says when it is ready.")
    if not _requests.token_matches(kernel, row, query.token):
        raise ProblemError(
            403,
            "Forbidden",
            "The download link is not valid.",
            errors=[{"field": "token", "message": "does not match", "type": "value_error", "in": "query"}],
        )
    expires = _requests._aware(row["download_expires_at"])
    if expires is None or _requests.utcnow() >= expires:
        raise ProblemError(410, "Link expired", "This download link has expired; ask for a new export.")
    path = export_dir(settings_of(kernel), kernel.state_dir) / row["file_name"]
    if not path.exists():
        raise ProblemError(410, "Export deleted", "This export file has been deleted; ask for a new export.")
    data = state_of(kernel).keys.decrypt(path.read_bytes(), context=row["id"])
    await kernel.audit(
        "privacy.export_downloaded",
        actor=actor,
        subject=actor.id,
        target=f"privacy_request:{row['id']}",
        client_address=_client(request),
        details={"request_id": row["id"], "bytes": len(data)},
    )
    return Response(
        data, media_type="application/zip", headers={"content-disposition": f'attachment; filename="privacy-export-{row["id"]}.zip"'}
    )


async def erase_me(request: Request, *, body: ErasureBody) -> dict[str, Any]:
    """Erase your account and personal data (after checking your password again); legal holds are reported."""
    kernel = kernel_of(request)
    actor = await _caller(request)
    if actor.kind != "user":
        raise ProblemError(403, "Forbidden", "Only a person logged in with their password can erase their account (not an API key).")
    credentials = {"password": body.password, **({"totp_code": body.totp_code} if body.totp_code else {})}
    verdict = await kernel.hook.reauthenticate(kernel=kernel, actor=actor, credentials=credentials)
    if hasattr(verdict, "__await__"):
        verdict = await verdict
    if verdict is None:
        raise ProblemError(
            503, "Re-authentication unavailable", "No identity plugin can check your credentials again; enable the auth plugin."
        )
    if not verdict:
        await kernel.audit(
            "privacy.reauthentication_failed", actor=actor, subject=actor.id, outcome="denied", client_address=_client(request)
        )
        raise ProblemError(
            401,
            "Re-authentication failed",
            "The password or TOTP code is wrong.",
            errors=[{"field": "password", "message": "does not match", "type": "value_error", "in": "body"}],
        )
    detail = {**_detail(actor), "email": _principal(actor).get("email")}
    row = await _requests.create(
        kernel,
        user_id=actor.id,
        tenant_id=actor.tenant_id,
        kind="erasure",
        requested_by=actor.id,
        detail={k: v for k, v in detail.items() if k != "email"},
    )
    done = await _requests.process(kernel, row["id"], email=detail.get("email"))
    return _requests.present(kernel, done or row, owner=True)


async def correction(request: Request, *, body: CorrectionBody) -> Response:
    """Ask for a correction of your data; the DPO answers it within the deadline."""
    kernel = kernel_of(request)
    actor = await _caller(request)
    row = await _requests.create(
        kernel,
        user_id=actor.id,
        tenant_id=actor.tenant_id,
        kind="correction",
        requested_by=actor.id,
        detail={"fields": sorted(body.fields), "note": body.note, "values": body.fields},
    )
    return _json(_requests.present(kernel, row, owner=True), 202)


async def my_requests(request: Request) -> dict[str, Any]:
    """Your privacy requests, newest first."""
    import sqlalchemy as sa

    from ._models import requests

    kernel = kernel_of(request)
    actor = await _caller(request)
    async with kernel.database().session(system=True) as session:
        rows = (
            (
                await session.execute(
                    sa.select(requests)
                    .where(requests.c.user_id == actor.id, requests.c.tenant_id == actor.tenant_id)
                    .order_by(requests.c.received_at.desc())
                    .limit(200)
                )
            )
            .mappings()
            .all()
        )
    return {"requests": [_requests.present(kernel, dict(row), owner=True) for row in rows]}


async def request_status(request: Request) -> dict[str, Any]:
    """The status page of one of your privacy requests: steps, deadline, report and download link."""
    actor, row = await _own(request)
    return _requests.present(kernel_of(request), row, owner=row["user_id"] == actor.id)


async def admin_requests(request: Request, *, query: AdminListQuery) -> dict[str, Any]:
    """Every privacy request, for the DPO: filter by status, kind, overdue."""
    import sqlalchemy as sa

    from ._models import requests

    kernel = kernel_of(request)
    statement = sa.select(requests).order_by(requests.c.deadline_at).limit(query.limit)
    if query.status:
        statement = statement.where(requests.c.status == query.status)
    if query.kind:
        statement = statement.where(requests.c.kind == query.kind)
    if query.overdue is not None:
        late = sa.and_(requests.c.status != "completed", requests.c.deadline_at < _requests.utcnow())
        statement = statement.where(late if query.overdue else sa.not_(late))
    async with kernel.database().session(system=True) as session:
        rows = (await session.execute(statement)).mappings().all()
    return {"requests": [_requests.present(kernel, dict(row), owner=False) for row in rows]}


async def admin_complete(request: Request, *, body: CompleteBody) -> dict[str, Any]:
    """Close a request the DPO answered by hand (a correction), with a note."""
    kernel = kernel_of(request)
    actor = await _caller(request)
    row = await _request_row(request)
    if row is None:
        raise ProblemError(404, "Not Found", "There is no such privacy request.")
    if row["status"] == "completed":
        raise ProblemError(409, "Already completed", "This request is already completed.")
    done = await _requests.complete(kernel, row["id"], by=actor.id, note=body.note)
    return _requests.present(kernel, done, owner=False)


async def admin_erasure(request: Request, *, body: AdminErasureBody) -> dict[str, Any]:
    """Erase a person's data for a request received by another channel; running it again changes nothing more."""
    kernel = kernel_of(request)
    actor = await _caller(request)
    row = await _requests.create(
        kernel,
        user_id=body.user_id,
        tenant_id=body.tenant_id,
        kind="erasure",
        requested_by=actor.id,
        detail={"owned_tenant_id": body.tenant_id, "reason": body.reason},
    )
    done = await _requests.process(kernel, row["id"], email=body.email)
    return _requests.present(kernel, done or row, owner=False)


def routes() -> list[BaseRoute]:
    return [
        Route("/v1/privacy/consents", get_consents, permission=OWN, tags=["privacy"], name="privacy_consents"),
        Route(
            "/v1/privacy/consents",
            put_consents,
            methods=["PUT"],
            body=ConsentChanges,
            permission=OWN,
            tags=["privacy"],
            name="privacy_consents_put",
        ),
        Route(
            "/v1/privacy/exports", create_export, methods=["POST"], permission=OWN, status_code=202, tags=["privacy"], name="privacy_export"
        ),
        Route(
            "/v1/privacy/exports/{request_id}/download",
            download_export,
            query=DownloadQuery,
            permission=OWN,
            tags=["privacy"],
            name="privacy_export_download",
        ),
        Route(
            "/v1/privacy/erasure", erase_me, methods=["POST"], body=ErasureBody, permission=OWN, tags=["privacy"], name="privacy_erasure"
        ),
        Route(
            "/v1/privacy/corrections",
            correction,
            methods=["POST"],
            body=CorrectionBody,
            permission=OWN,
            status_code=202,
            tags=["privacy"],
            name="privacy_correction",
        ),
        Route("/v1/privacy/requests", my_requests, permission=OWN, tags=["privacy"], name="privacy_requests"),
        Route("/v1/privacy/requests/{request_id}", request_status, permission=OWN, tags=["privacy"], name="privacy_request"),
        Route(
            "/v1/admin/privacy/requests",
            admin_requests,
            query=AdminListQuery,
            permission=DPO,
            tags=["privacy"],
            name="privacy_admin_requests",
        ),
        Route(
            "/v1/admin/privacy/requests/{request_id}/complete",
            admin_complete,
            methods=["POST"],
            body=CompleteBody,
            permission=DPO,
            tags=["privacy"],
            name="privacy_admin_complete",
        ),
        Route(
            "/v1/admin/privacy/erasure",
            admin_erasure,
            methods=["POST"],
            body=AdminErasureBody,
            permission=DPO,
            tags=["privacy"],
            name="privacy_admin_erasure",
        ),
    ]
