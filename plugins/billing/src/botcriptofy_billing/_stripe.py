"""The Stripe side: one client per plugin start, the price catalog, Checkout, the portal and plan sync.

Every call goes through the official ``stripe`` library's async API (``StripeClient.v1``). Objects
coming back are turned into plain dicts at this boundary so the rest of the plugin reads one shape,
the one Stripe documents, whether it came from the API or from a webhook body.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import stripe

from botcriptofy import ProblemError

from ._money import Money
from ._plans import Catalog, Interval, Plan
from ._settings import BillingSettings

log = logging.getLogger("botcriptofy.billing")

PLAN_METADATA = "botcriptofy_plan"
INTERVAL_METADATA = "botcriptofy_interval"
TENANT_METADATA = "tenant_id"


def plain(value: Any) -> Any:
    """A Stripe object (or anything holding them) as plain dicts and lists."""
    if isinstance(value, stripe.StripeObject):
        return value.to_dict(recursive=True)
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [plain(item) for item in value]
    return value


def not_configured() -> ProblemError:
    return ProblemError(
        503,
        "Billing not configured",
        "Stripe keys are not set on this server: set BOTCRIPTOFY_BILLING__SECRET_KEY (and BOTCRIPTOFY_BILLING__WEBHOOK_SECRET).",
        type="https://botcriptofy.dev/problems/billing-not-configured",
    )


def provider_problem(error: stripe.StripeError) -> ProblemError:
    """A Stripe failure as a 502 problem (never a 500): the payment provider refused or was unreachable."""
    status = getattr(error, "http_status", None)
    message = getattr(error, "user_message", None) or str(error).strip() or type(error).__name__
    log.warning("stripe call failed: %s (status %s)", message, status)
    return ProblemError(
        502,
        "Payment provider error",
        f"Stripe did not accept the request: {message}",
        type="https://botcriptofy.dev/problems/payment-provider",
        provider_status=status,
    )


class HTTPXClient(stripe.HTTPXClient):
    """The stripe library's async httpx client, sending the form body as ``content``.

    ``stripe.HTTPXClient`` passes the encoded body as ``data=<str>``, which httpx 0.28 deprecates
    (a ``DeprecationWarning`` on every POST); the request on the wire is the same.
    """

    def _get_request_args_kwargs(self, method: str, url: str, headers: Any, post_data: Any) -> Any:
        args, kwargs = super()._get_request_args_kwargs(method, url, headers, post_data)
        body = kwargs.pop("data", None)
        if isinstance(body, (str, bytes)):
            kwargs["content"] = body
        elif body:
            kwargs["data"] = body
        return args, kwargs


@dataclass
class SyncAction:
    kind: str  # product | price
    key: str
    action: str  # created | updated | unchanged | replaced | reactivated
    stripe_id: str

    def __str__(self) -> str:
        return f"{self.kind:<8} {self.key:<32} {self.action:<11} {self.stripe_id}"


@dataclass
class StripeGateway:
    """The plugin's Stripe client and the prices it resolved, for one plugin start."""

    client: stripe.StripeClient
    http_client: stripe.HTTPClient
    prefix: str
    _prices: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def build(cls, settings: BillingSettings, http_client: stripe.HTTPClient | None = None) -> StripeGateway:
        http = http_client or HTTPXClient(timeout=settings.request_timeout)
        client = stripe.StripeClient(
            settings.secret_key.get_secret_value(),
            base_addresses={"api": settings.api_base} if settings.api_base else None,
            http_client=http,
            max_network_retries=settings.max_network_retries,
        )
        return cls(client=client, http_client=http, prefix=settings.lookup_key_prefix)

    async def close(self) -> None:
        try:
            await self.http_client.close_async()
        except Exception:
            log.debug("closing the Stripe HTTP client failed", exc_info=True)

    # -- prices ---------------------------------------------------------------------------

    async def price(self, plan: Plan, interval: Interval) -> dict[str, Any]:
        """The active Stripe price of ``plan`` per ``interval``, found by lookup key (cached for the plugin's life)."""
        key = plan.lookup_key(interval, self.prefix)
        found = self._prices.get(key)
        if found is None:
            listing = plain(await self.client.v1.prices.list_async({"lookup_keys": [key], "active": True, "limit": 1}))
            data = listing.get("data") or []
            if not data:
                raise ProblemError(
                    503,
                    "Billing not configured",
                    f"Stripe has no active price with lookup key '{key}': run `botcriptofy billing sync-plans`.",
                    type="https://botcriptofy.dev/problems/billing-not-configured",
                )
            found = data[0]
            self._prices[key] = found
        return found

    # -- customers, checkout, portal -------------------------------------------------------

    async def create_customer(self, tenant_id: str, *, email: str | None, name: str | None) -> str:
        params: dict[str, Any] = {"metadata": {TENANT_METADATA: tenant_id}}
        if email:
            params["email"] = email
        if name:
            params["name"] = name
        customer = plain(await self.client.v1.customers.create_async(params, {"idempotency_key": f"bcf-customer-{tenant_id}"}))
        return str(customer["id"])

    async def create_checkout(self, *, tenant_id: str, customer: str, plan: Plan, interval: Interval, price_id: str,
                              trial_days: int, success_url: str, cancel_url: str) -> dict[str, Any]:
        metadata = {TENANT_METADATA: tenant_id, PLAN_METADATA: plan.code, INTERVAL_METADATA: interval.value}
        subscription_data: dict[str, Any] = {"metadata": metadata}
        if trial_days > 0:
            subscription_data["trial_period_days"] = trial_days
        params: dict[str, Any] = {
            "mode": "subscription",
            "customer": customer,
            "client_reference_id": tenant_id,
            "line_items": [{"price": price_id, "quantity": 1}],
            "success_url": success_url,
            "cancel_url": cancel_url,
            "metadata": metadata,
            "subscription_data": subscription_data,
        }
        return plain(await self.client.v1.checkout.sessions.create_async(params))  # type: ignore[no-any-return]

    async def create_portal(self, *, customer: str, return_url: str) -> dict[str, Any]:
        return plain(await self.client.v1.billing_portal.sessions.create_async({"customer": customer, "return_url": return_url}))  # type: ignore[no-any-return]

    # -- subscriptions ----------------------------------------------------------------------

    async def retrieve_subscription(self, subscription_id: str) -> dict[str, Any]:
        return plain(await self.client.v1.subscriptions.retrieve_async(subscription_id))  # type: ignore[no-any-return]

    async def change_price(self, subscription: dict[str, Any], price_id: str, *, tenant_id: str, plan: Plan,
                           interval: Interval) -> dict[str, Any]:
        """Move the subscription's one item to ``price_id``, prorating the difference on the next invoice."""
        items = ((subscription.get("items") or {}).get("data")) or []
        if not items:
            raise ProblemError(409, "Subscription has no item", "The Stripe subscription has no item to change.")
        params = {
            "items": [{"id": items[0]["id"], "price": price_id}],
            "proration_behavior": "create_prorations",
            "cancel_at_period_end": False,
            "metadata": {TENANT_METADATA: tenant_id, PLAN_METADATA: plan.code, INTERVAL_METADATA: interval.value},
        }
        return plain(await self.client.v1.subscriptions.update_async(subscription["id"], params))  # type: ignore[no-any-return]

    async def set_cancel_at_period_end(self, subscription_id: str, cancel: bool) -> dict[str, Any]:
        return plain(await self.client.v1.subscriptions.update_async(subscription_id, {"cancel_at_period_end": cancel}))  # type: ignore[no-any-return]

    # -- plan sync ------------------------------------------------------------------------

    async def sync_plans(self, catalog: Catalog) -> list[SyncAction]:
        """Create or update a product per sold plan and a price per interval, idempotently.

        Products have fixed ids (``<prefix>_<plan>``); prices are found by lookup key
        (``<prefix>_<plan>_<interval>``). A price whose amount changed is replaced: a new price takes
        over the lookup key (``transfer_lookup_key``) and the old one is archived, as Stripe prices
        cannot change amount.
        """
        actions: list[SyncAction] = []
        for plan in catalog.sold:
            product_id = plan.product_id(self.prefix)
            actions.append(await self._sync_product(plan, product_id))
            for interval in Interval:
                actions.append(await self._sync_price(plan, interval, product_id))
        self._prices.clear()
        return actions

    async def _sync_product(self, plan: Plan, product_id: str) -> SyncAction:
        wanted_metadata = {PLAN_METADATA: plan.code}
        try:
            product = plain(await self.client.v1.products.retrieve_async(product_id))
        except stripe.InvalidRequestError as error:
            if error.http_status != 404:
                raise
            created = plain(await self.client.v1.products.create_async(
                {"id": product_id, "name": f"BotCriptoFy {plan.name}", "metadata": wanted_metadata}))
            return SyncAction("product", product_id, "created", created["id"])
        changes: dict[str, Any] = {}
        if product.get("name") != f"BotCriptoFy {plan.name}":
            changes["name"] = f"BotCriptoFy {plan.name}"
        if (product.get("metadata") or {}).get(PLAN_METADATA) != plan.code:
            changes["metadata"] = wanted_metadata
        if product.get("active") is False:
            changes["active"] = True
        if not changes:
            return SyncAction("product", product_id, "unchanged", product_id)
        await self.client.v1.products.update_async(product_id, changes)
        return SyncAction("product", product_id, "updated", product_id)

    async def _sync_price(self, plan: Plan, interval: Interval, product_id: str) -> SyncAction:
        key = plan.lookup_key(interval, self.prefix)
        amount: Money = plan.price(interval)
        listing = plain(await self.client.v1.prices.list_async({"lookup_keys": [key], "limit": 10}))
        existing = (listing.get("data") or [None])[0]
        if existing is not None and _price_matches(existing, amount, interval, product_id):
            if existing.get("active") is False:
                await self.client.v1.prices.update_async(existing["id"], {"active": True})
                return SyncAction("price", key, "reactivated", existing["id"])
            return SyncAction("price", key, "unchanged", existing["id"])
        params: dict[str, Any] = {
            "product": product_id,
            "currency": amount.stripe_currency,
            "unit_amount": amount.amount_minor,
            "recurring": {"interval": interval.value, "interval_count": 1},
            "lookup_key": key,
            "transfer_lookup_key": True,
            "nickname": f"{plan.name} ({interval.value}ly)",
            "metadata": {PLAN_METADATA: plan.code, INTERVAL_METADATA: interval.value},
        }
        created = plain(await self.client.v1.prices.create_async(params, {"idempotency_key": f"bcf-price-{key}-{amount.amount_minor}"}))
        if existing is not None:
            await self.client.v1.prices.update_async(existing["id"], {"active": False})
            return SyncAction("price", key, "replaced", created["id"])
        return SyncAction("price", key, "created", created["id"])


def _price_matches(price: dict[str, Any], amount: Money, interval: Interval, product_id: str) -> bool:
    recurring = price.get("recurring") or {}
    product = price.get("product")
    product = product.get("id") if isinstance(product, dict) else product
    return (
        price.get("unit_amount") == amount.amount_minor
        and str(price.get("currency", "")).lower() == amount.stripe_currency
        and recurring.get("interval") == interval.value
        and int(recurring.get("interval_count") or 1) == 1
        and product == product_id
    )


def plan_of(subscription: dict[str, Any], catalog: Catalog, prefix: str) -> tuple[str | None, str | None]:
    """Find which of our plans (and interval) a Stripe subscription is on.

    Reads the first item's price: its ``metadata`` (set by ``sync-plans``), else its lookup key.
    Stripe mirrors a price as the item's ``plan`` (same id and metadata) for older API versions;
    that mirror is read when ``price`` is absent. The subscription's own metadata is the last resort.
    """
    items = ((subscription.get("items") or {}).get("data")) or []
    for item in items[:1]:
        for ref in (item.get("price"), item.get("plan")):
            if not isinstance(ref, dict):
                continue
            metadata = ref.get("metadata") or {}
            interval = metadata.get(INTERVAL_METADATA) or (ref.get("recurring") or {}).get("interval") or ref.get("interval")
            code = metadata.get(PLAN_METADATA)
            if code in catalog:
                return code, interval
            lookup_key = ref.get("lookup_key") or ""
            if lookup_key.startswith(prefix + "_"):
                code, _, tail = lookup_key[len(prefix) + 1:].rpartition("_")
                if code in catalog:
                    return code, tail or interval
    metadata = subscription.get("metadata") or {}
    code = metadata.get(PLAN_METADATA)
    if code in catalog:
        return code, metadata.get(INTERVAL_METADATA)
    return None, None
