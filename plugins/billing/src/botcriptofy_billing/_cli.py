"""``botcriptofy billing ...`` commands."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import click

from botcriptofy import pass_kernel

from ._plans import CATALOG, QUOTAS, RATE_LIMITS

if TYPE_CHECKING:
    from botcriptofy import Kernel


def add_commands(cli: click.Group) -> None:
    @cli.group()
    def billing() -> None:
        """Plans, Stripe catalogue sync and plan assignment."""

    @billing.command("plans")
    @click.option("--json", "as_json", is_flag=True, help="Print JSON.")
    def plans(as_json: bool) -> None:
        """Print the plans: prices, trials, limits and features."""
        rows = [{
            "code": plan.code, "name": plan.name, "sold": plan.sold, "trial_days": plan.trial_days,
            "prices": {interval.value: price.amount for interval, price in plan.prices.items()}, "currency": CATALOG.currency,
            "limits": {name: plan.limit(name) for name in (*QUOTAS, *RATE_LIMITS)}, "features": sorted(plan.features),
        } for plan in CATALOG]
        if as_json:
            click.echo(json.dumps(rows, indent=2))
            return
        for row in rows:
            limits = ", ".join(f"{k}={'unlimited' if v is None else v}" for k, v in row["limits"].items())
            click.echo(f"{row['code']:<11} {row['currency']} {row['prices']['month']:>7}/month {row['prices']['year']:>8}/year  "
                       f"trial {row['trial_days']:>2} d  {'sold' if row['sold'] else 'not sold'}  {limits}")

    @billing.command("sync-plans")
    @pass_kernel
    async def sync_plans(kernel: Kernel) -> None:
        """Create or update the Stripe products and prices of the sold plans (safe to run again)."""
        from ._state import STATE

        state = kernel.stash.get(STATE, None)
        if state is None:
            raise click.ClickException("the billing plugin is not enabled (see `botcriptofy plugins list`)")
        if state.gateway is None:
            raise click.ClickException("Stripe is not configured: set BOTCRIPTOFY_BILLING__SECRET_KEY")
        import stripe

        try:
            actions = await state.gateway.sync_plans(state.catalog)
        except stripe.StripeError as error:
            raise click.ClickException(f"Stripe refused the sync: {error}") from None
        for action in actions:
            click.echo(str(action))
        changed = sum(1 for action in actions if action.action != "unchanged")
        click.echo(f"{len(actions)} objects checked, {changed} changed")

    @billing.command("assign")
    @click.argument("tenant_id")
    @click.argument("plan", required=False)
    @pass_kernel
    async def assign_plan(kernel: Kernel, tenant_id: str, plan: str | None) -> None:
        """Assign PLAN (such as internal, for influencers) to TENANT_ID; without PLAN, remove the assignment."""
        from ._service import assign

        if plan is not None and plan not in CATALOG:
            raise click.ClickException(f"unknown plan '{plan}'; plans: {', '.join(p.code for p in CATALOG)}")
        await assign(kernel, tenant_id, plan)
        click.echo(f"tenant {tenant_id}: {'plan ' + plan if plan else 'assignment removed'}")
