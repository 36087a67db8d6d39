"""The billing plugin's hook implementations."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import stripe

from botcriptofy import (
    DataSubject,
    Entitlements,
    Envelope,
    EventHandler,
    Migrations,
    Permission,
    QuotaDecision,
    SettingsSchema,
    StaffCommand,
    hookimpl,
)

from . import _service  # entitlements_for runs on every authenticated request: imported once, here
from ._models import Base
from ._settings import SCHEMA, BillingSettings
from ._state import STATE, BillingState
from ._stripe import StripeGateway

if TYPE_CHECKING:
    from datetime import datetime

    import click
    from starlette.routing import BaseRoute

    from botcriptofy import Activity, ApprovalAction, Kernel, Workflow

log = logging.getLogger("botcriptofy.billing")

NAME = "billing"
INFLUENCER_PLAN = "internal"


class BillingPlugin:
    """Plans, Stripe Checkout and portal, webhooks, subscription state, entitlements and quotas.

    ``stripe_http_client`` builds the HTTP client the Stripe library uses (one per start); by
    default the library's async ``HTTPXClient``. Tests pass one that answers from recordings.
    """

    def __init__(self, *, stripe_http_client: Callable[[], stripe.HTTPClient] | None = None) -> None:
        self.stripe_http_client = stripe_http_client

    # -- settings and lifecycle -----------------------------------------------------------

    @hookimpl
    def plugin_settings_schema(self) -> SettingsSchema:
        return SCHEMA

    def _settings(self, kernel: Kernel) -> BillingSettings:
        settings = kernel.settings_for(NAME)
        return settings if isinstance(settings, BillingSettings) else BillingSettings()

    @hookimpl
    def startup(self, kernel: Kernel) -> None:
        settings = self._settings(kernel)
        gateway = None
        if settings.configured:
            http = self.stripe_http_client() if self.stripe_http_client is not None else None
            gateway = StripeGateway.build(settings, http)
        else:
            log.warning("billing: no Stripe secret key (BOTCRIPTOFY_BILLING__SECRET_KEY); checkout answers 503 until one is set")
        if not settings.webhook_secret.get_secret_value():
            log.warning("billing: no webhook secret (BOTCRIPTOFY_BILLING__WEBHOOK_SECRET); the webhook answers 503 until one is set")
        kernel.stash[STATE] = BillingState(settings=settings, gateway=gateway)

    @hookimpl
    def settings_changed(self, kernel: Kernel, previous: Any, current: Any, changed: frozenset[str]) -> None:
        kernel.stash[STATE] = replace(kernel.stash[STATE], settings=current)

    @hookimpl
    async def shutdown(self, kernel: Kernel) -> None:
        state = kernel.stash.get(STATE, None)
        if state is not None and state.gateway is not None:
            await state.gateway.close()

    # -- HTTP, CLI, migrations ------------------------------------------------------------

    @hookimpl
    def register_routes(self, kernel: Kernel) -> list[BaseRoute]:
        from ._routes import routes

        return list(routes())

    @hookimpl
    def register_commands(self, cli: click.Group) -> None:
        from ._cli import add_commands

        add_commands(cli)

    @hookimpl
    def register_migrations(self, kernel: Kernel) -> Migrations:
        return Migrations(directory=Path(__file__).parent / "migrations", metadata=Base.metadata)

    # -- entitlements and quotas ---------------------------------------------------------

    @hookimpl
    async def entitlements_for(self, kernel: Kernel, tenant_id: str) -> Entitlements | None:
        return _service.entitlements_of(await _service.plan_for(kernel, tenant_id))

    @hookimpl
    async def consume_quota(self, kernel: Kernel, tenant_id: str, quota: str, amount: int) -> QuotaDecision | None:
        from ._service import consume

        return await consume(kernel, tenant_id, quota, amount)

    # -- events --------------------------------------------------------------------------

    @hookimpl
    def register_event_handlers(self, kernel: Kernel) -> list[EventHandler]:
        async def influencer_approved(envelope: Envelope) -> None:
            # Influencers sign up on Free; the marketing department's approval moves them to Internal.
            tenant_id = envelope.payload.get("tenant_id")
            if not tenant_id:
                return
            from ._service import assign

            await assign(kernel.current(), str(tenant_id), INFLUENCER_PLAN)

        from ._dunning import event_handlers

        return [EventHandler("billing.influencer-plan", influencer_approved, events=("auth.influencer_approved",)), *event_handlers(kernel)]

    @hookimpl
    def register_staff_commands(self, kernel: Kernel) -> list[StaffCommand]:
        from ._commands import COMMANDS

        return list(COMMANDS)

    @hookimpl
    def register_permissions(self, kernel: Kernel) -> list[Permission]:
        return [
            Permission(
                "billing:read",
                "Read plans, subscriptions and invoices of any tenant.",
                frozenset({"finance:viewer", "subscriptions:viewer"}),
            ),
            Permission("billing:refund", "Refund a payment.", frozenset({"finance:member"})),
            Permission("billing:invoice", "Issue or correct an invoice.", frozenset({"finance:member"})),
            Permission("billing:dunning", "Approve pausing dunning reminders (billing.pause_dunning).", frozenset({"finance:manager"})),
            Permission("usage:read", "Read any tenant's quota usage.", frozenset({"subscriptions:viewer"})),
            Permission(
                "subscriptions:manage", "Change a tenant's plan by hand (grants, corrections).", frozenset({"subscriptions:member"})
            ),
        ]

    @hookimpl
    async def export_subject_data(self, kernel: Kernel, subject: DataSubject) -> dict[str, Any] | None:
        from ._privacy import export

        return await export(kernel, subject)

    @hookimpl
    async def erase_subject_data(self, kernel: Kernel, subject: DataSubject) -> dict[str, Any] | None:
        from ._privacy import erase

        return await erase(kernel, subject)

    @hookimpl
    async def business_metrics(self, kernel: Kernel, since: datetime, until: datetime) -> dict[str, int] | None:
        from ._figures import business_metrics

        return await business_metrics(kernel, since, until)

    @hookimpl
    def register_approval_actions(self, kernel: Kernel) -> list[ApprovalAction]:
        from ._dunning import approval_actions

        return approval_actions(kernel)

    # -- workflows -----------------------------------------------------------------------

    @hookimpl
    def register_workflows(self, kernel: Kernel) -> list[Workflow | Activity]:
        from ._dunning import contributions

        return contributions(kernel)
