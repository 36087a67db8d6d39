"""Webhook signature verification over the raw request body, with Stripe's own verifier."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

import stripe

from botcriptofy import ProblemError

SIGNATURE_PROBLEM = "https://botcriptofy.dev/problems/webhook-signature"


def _refuse(detail: str) -> ProblemError:
    return ProblemError(400, "Invalid webhook signature", detail, type=SIGNATURE_PROBLEM)


def _timestamp(header: str) -> int | None:
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def verify(payload: bytes, header: str | None, secret: str, tolerance: int, *, now: float | None = None) -> dict[str, Any]:
    """Verify ``Stripe-Signature`` against the raw ``payload`` and return the event as a dict.

    Refuses (400 problem) a missing header, a signature that does not match, a timestamp older than
    ``tolerance`` seconds or further ahead than ``tolerance``, a body that is not UTF-8 JSON, and a
    JSON document that is not a Stripe event.
    """
    if not header:
        raise _refuse("The request has no Stripe-Signature header; only Stripe may call this endpoint.")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise _refuse("The body is not UTF-8.") from None
    try:
        stripe.WebhookSignature.verify_header(text, header, secret, tolerance)
    except stripe.SignatureVerificationError as error:
        message = str(error.user_message or error).split(" It should")[0]
        if "tolerance" in message:
            message = f"The signature's timestamp is more than {tolerance} s old (a replay, or a clock far off)."
        raise _refuse(message) from None
    signed_at = _timestamp(header)
    current = time.time() if now is None else now
    if signed_at is None or signed_at > current + tolerance:
        raise _refuse(f"The signature's timestamp is more than {tolerance} s in the future.")
    try:
        event = json.loads(text)
    except json.JSONDecodeError:
        raise _refuse("The signed body is not JSON.") from None
    if not isinstance(event, dict) or event.get("object") != "event" or not isinstance(event.get("id"), str) \
            or not isinstance(event.get("type"), str) or not isinstance((event.get("data") or {}).get("object"), dict):
        raise ProblemError(400, "Not a Stripe event", "The signed body is not a Stripe event object (id, type, data.object).",
                           type="https://botcriptofy.dev/problems/webhook-payload")
    if not isinstance(event.get("created"), int):
        event["created"] = int(signed_at)
    return event


def sign(payload: bytes | str, secret: str, *, timestamp: int | None = None) -> str:
    """Build a ``Stripe-Signature`` header value as Stripe does (``t=...,v1=HMAC-SHA256``); for tests and tools."""
    text = payload.decode("utf-8") if isinstance(payload, bytes) else payload
    when = int(time.time()) if timestamp is None else timestamp
    signature = hmac.new(secret.encode("utf-8"), f"{when}.{text}".encode(), hashlib.sha256).hexdigest()
    return f"t={when},v1={signature}"
