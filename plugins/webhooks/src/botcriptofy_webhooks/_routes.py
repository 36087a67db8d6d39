"""HTTP: a tenant's endpoints (the secret is shown once) and their delivery attempts. Plan entitlement: ``webhooks``."""

from __future__ import annotations

import base64
import os
import uuid
from datetime import datetime

import sqlalchemy as sa
from pydantic import BaseModel, Field, field_validator
from starlette.requests import Request
from starlette.routing import BaseRoute

from botcriptofy import Actor, ProblemError, Route, kernel_of, require

from ._models import attempts, endpoints, utcnow
from ._sender import settings_of


class EndpointIn(BaseModel):
    url: str = Field(max_length=2000, description="https URL that receives the events.")
    event_types: list[str] = Field(
        default_factory=lambda: ["*"], min_length=1, max_length=50, description="Event type patterns (billing.*)."
    )

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError("use an http(s) URL")
        return value


class EndpointOut(BaseModel):
    id: str
    url: str
    event_types: list[str]
    enabled: bool
    disabled_reason: str | None
    created_at: datetime


class EndpointCreated(EndpointOut):
    secret: str = Field(description="Shown once: verify signatures with it (Standard Webhooks).")


class AttemptOut(BaseModel):
    id: str
    event_id: str
    event_type: str
    status: str
    attempts: int
    last_status: int | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None


async def _tenant(request: Request) -> tuple[Actor, str]:
    actor = await require(request)
    if actor.tenant_id is None:
        raise ProblemError(403, "Forbidden", "Webhooks belong to a tenant.")
    entitlements = await kernel_of(request).entitlements(actor.tenant_id)
    if entitlements is not None and "webhooks" not in entitlements.features:
        raise ProblemError(
            403,
            "Plan does not include webhooks",
            f"The {entitlements.plan} plan has no webhooks; the Pro plan adds them.",
            type="https://botcriptofy.dev/problems/entitlement",
            upgrade_to="pro",
        )
    return actor, actor.tenant_id


async def create_endpoint(request: Request, body: EndpointIn) -> EndpointCreated:
    """Register an endpoint; the signing secret is in this answer only."""
    _, tenant = await _tenant(request)
    kernel = kernel_of(request)
    secret = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    row = {
        "id": str(uuid.uuid4()),
        "tenant_id": tenant,
        "url": body.url,
        "secret": secret,
        "event_types": body.event_types,
        "enabled": True,
        "disabled_reason": None,
        "created_at": utcnow(),
    }
    async with kernel.database().session(tenant_id=tenant, write_lock=True) as session:
        count = (await session.execute(sa.select(sa.func.count()).select_from(endpoints))).scalar_one()
        if count >= settings_of(kernel).max_endpoints:
            raise ProblemError(409, "Too many endpoints", f"A tenant may register {settings_of(kernel).max_endpoints} endpoints.")
        await session.execute(sa.insert(endpoints).values(**row))
    return EndpointCreated(**row)


async def list_endpoints(request: Request) -> list[EndpointOut]:
    """The tenant's endpoints (never their secrets)."""
    _, tenant = await _tenant(request)
    async with kernel_of(request).database().session(tenant_id=tenant) as session:
        rows = (await session.execute(sa.select(endpoints).order_by(endpoints.c.created_at))).all()
    return [EndpointOut(**{k: getattr(r, k) for k in EndpointOut.model_fields}) for r in rows]


async def list_attempts(request: Request) -> list[AttemptOut]:
    """Delivery attempts of one endpoint, newest first."""
    _, tenant = await _tenant(request)
    endpoint = request.path_params["endpoint"]
    async with kernel_of(request).database().session(tenant_id=tenant) as session:
        if (await session.execute(sa.select(endpoints.c.id).where(endpoints.c.id == endpoint))).first() is None:
            raise ProblemError(404, "Not found", "No such endpoint.")
        rows = (
            await session.execute(
                sa.select(attempts).where(attempts.c.endpoint_id == endpoint).order_by(attempts.c.created_at.desc()).limit(100)
            )
        ).all()
    return [AttemptOut(**{k: getattr(r, k) for k in AttemptOut.model_fields}) for r in rows]


async def delete_endpoint(request: Request) -> dict[str, bool]:
    """Remove an endpoint."""
    _, tenant = await _tenant(request)
    async with kernel_of(request).database().session(tenant_id=tenant) as session:
        result = await session.execute(sa.delete(endpoints).where(endpoints.c.id == request.path_params["endpoint"]))
    if not result.rowcount:
        raise ProblemError(404, "Not found", "No such endpoint.")
    return {"deleted": True}


def routes() -> list[BaseRoute]:
    tags = ["webhooks"]
    problems = {401: "Unauthorized", 403: "Forbidden"}
    return [
        Route(
            "/v1/webhooks/endpoints",
            create_endpoint,
            methods=["POST"],
            body=EndpointIn,
            response=EndpointCreated,
            status_code=201,
            authenticated=True,
            tags=tags,
            responses=problems,
        ),
        Route(
            "/v1/webhooks/endpoints",
            list_endpoints,
            response=list[EndpointOut],
            authenticated=True,
            tags=tags,
            responses=problems,
            name="list_webhook_endpoints",
        ),
        Route(
            "/v1/webhooks/endpoints/{endpoint}",
            delete_endpoint,
            methods=["DELETE"],
            response=dict[str, bool],
            authenticated=True,
            tags=tags,
            responses={**problems, 404: "Not found"},
        ),
        Route(
            "/v1/webhooks/endpoints/{endpoint}/deliveries",
            list_attempts,
            response=list[AttemptOut],
            authenticated=True,
            tags=tags,
            responses={**problems, 404: "Not found"},
        ),
    ]
