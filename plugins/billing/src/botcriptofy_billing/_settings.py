"""The ``[billing]`` settings section."""

from __future__ import annotations

from pydantic import Field, SecretStr

from botcriptofy import PluginSettings, SettingsSchema


class BillingSettings(PluginSettings):
    """Billing settings. Secrets come from environment variables (``BOTCRIPTOFY_BILLING__SECRET_KEY``)."""

    secret_key: SecretStr = Field(SecretStr(""), description="Stripe secret API key (sk_live_.../sk_test_...); empty: billing off.")
    webhook_secret: SecretStr = Field(SecretStr(""), description="Signing secret of the Stripe webhook endpoint (whsec_...).")
    api_base: str | None = Field(None, description="Override of Stripe's API base URL (for localstripe in tests).")
    success_url: str = Field("http://127.0.0.1:8000/billing/success?session_id={CHECKOUT_SESSION_ID}",
                             description="Where Checkout sends the customer after paying.")
    cancel_url: str = Field("http://127.0.0.1:8000/billing/canceled", description="Where Checkout sends the customer who gives up.")
    portal_return_url: str = Field("http://127.0.0.1:8000/billing", description="Where the customer portal's back link goes.")
    webhook_tolerance: int = Field(300, ge=1, le=3600, description="Seconds a webhook signature's timestamp may be old or ahead.")
    trials: bool = Field(True, description="Offer each plan's trial to a tenant's first subscription.")
    quota_warning_ratio: float = Field(0.8, gt=0, lt=1, description="Share of a quota at which a warning event is published.")
    entitlements_ttl: float = Field(30.0, ge=0, description="Seconds a tenant's entitlements stay cached (changes invalidate at once).")
    lookup_key_prefix: str = Field("botcriptofy", pattern=r"^[a-z0-9_]+$", description="Prefix of Stripe product ids and lookup keys.")
    request_timeout: float = Field(30.0, gt=0, description="Seconds before a Stripe API call gives up.")
    max_network_retries: int = Field(2, ge=0, le=5, description="Retries of a failed Stripe API call (idempotency keys make them safe).")

    @property
    def configured(self) -> bool:
        return bool(self.secret_key.get_secret_value())


LIVE_KEYS = frozenset({
    "webhook_secret",
    "success_url",
    "cancel_url",
    "portal_return_url",
    "webhook_tolerance",
    "trials",
    "quota_warning_ratio",
    "entitlements_ttl",
})

SCHEMA = SettingsSchema(model=BillingSettings, live=LIVE_KEYS)
