"""Events the plugin publishes (rarely: once per crossing, never per request)."""

from __future__ import annotations

from botcriptofy import Event


class QuotaThresholdReached(Event):
    """A tenant's monthly API calls reached 80 % (warning) or 100 % (blocked from the next call) of its plan."""

    event_type = "ratelimit.quota_threshold"

    tenant_id: str
    plan: str
    quota: str
    used: int
    limit: int
    percent: int
    upgrade_to: str | None = None


class SubjectPenalized(Event):
    """A subject's penalty score crossed the threshold: its limits are tightened until the score decays."""

    event_type = "ratelimit.subject_penalized"

    subject: str
    tenant_id: str | None = None
    address: str
    status: int
