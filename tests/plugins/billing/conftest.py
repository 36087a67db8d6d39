"""Billing fixtures: a real localstripe server, the official stripe client pointed at it, recorded
responses (in Stripe's documented shapes) for what localstripe lacks, a test identity plugin, and the
kernel served over HTTP so localstripe can deliver signed webhooks to it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest
import stripe
from starlette.requests import Request

from botcriptofy import Actor, hookimpl
from botcriptofy._serve import KEEP_ALIVE
from botcriptofy_billing import BillingPlugin, sign
from botcriptofy_billing._stripe import HTTPXClient

SECRET_KEY = "sk_test_botcriptofy"
WEBHOOK_SECRET = "whsec_test_botcriptofy"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ---------------------------------------------------------------------------------------------
# localstripe
# ---------------------------------------------------------------------------------------------


@dataclass
class LocalStripe:
    url: str
    process: subprocess.Popen[bytes]

    def call(self, method: str, path: str, data: dict[str, Any] | None = None) -> Any:
        body = urlencode(data or {}).encode() if data is not None else None
        request = urllib.request.Request(self.url + path, data=body, method=method)
        token = base64.b64encode(f"{SECRET_KEY}:".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
        with urllib.request.urlopen(request, timeout=10) as response:
            text = response.read().decode() or "null"
        return json.loads(text) if text.strip().startswith(("{", "[", "null")) else text

    def reset(self) -> None:
        self.call("DELETE", "/_config/data")

    def register_webhook(self, url: str, secret: str = WEBHOOK_SECRET) -> None:
        self.call("POST", "/_config/webhooks/botcriptofy", {"url": url, "secret": secret})


@pytest.fixture(scope="session")
def localstripe_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStripe]:
    """``localstripe --port P --from-scratch`` as a subprocess, one per test worker."""
    port = free_port()
    binary = Path(sys.executable).with_name("localstripe")
    log = (tmp_path_factory.mktemp("localstripe") / "localstripe.log").open("wb")
    process = subprocess.Popen([str(binary), "--port", str(port), "--from-scratch"], stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    server = LocalStripe(url=f"http://127.0.0.1:{port}", process=process)
    deadline = time.monotonic() + 30
    while True:
        try:
            server.call("GET", "/v1/customers")
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(f"localstripe did not start (exit code {process.poll()}); see {log.name}") from None
            time.sleep(0.1)
    yield server
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=6)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    log.close()


@pytest.fixture
def localstripe(localstripe_server: LocalStripe) -> LocalStripe:
    """The worker's localstripe, emptied for this test."""
    localstripe_server.reset()
    return localstripe_server


# ---------------------------------------------------------------------------------------------
# Recorded responses for what localstripe lacks
# ---------------------------------------------------------------------------------------------


def unflatten(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Stripe's form encoding (``a[b][0][c]=v``) back into nested dicts and lists."""
    root: dict[str, Any] = {}
    for key, value in pairs:
        parts = key.replace("]", "").split("[")
        node: Any = root
        for index, part in enumerate(parts):
            last = index == len(parts) - 1
            nxt = parts[index + 1] if not last else None
            if isinstance(node, list):
                position = int(part)
                while len(node) <= position:
                    node.append({} if nxt is not None and not nxt.isdigit() else [] if nxt is not None else None)
                if last:
                    node[position] = value
                else:
                    if node[position] is None:
                        node[position] = [] if nxt.isdigit() else {}  # type: ignore[union-attr]
                    node = node[position]
            else:
                if last:
                    node[part] = value
                else:
                    node = node.setdefault(part, [] if nxt.isdigit() else {})  # type: ignore[union-attr]
    return root


@dataclass
class Call:
    method: str
    path: str
    params: dict[str, Any]
    recorded: bool


@dataclass
class RecordedStripe:
    """Answers Prices, Checkout Sessions and billing-portal sessions as Stripe documents them; forwards the rest.

    Everything else (customers, products, subscriptions, invoices) goes to the real localstripe
    server. A created recurring price is also created in localstripe as a plan with the same id
    and metadata (Stripe treats a recurring price id as a plan id), so subscriptions can use it.
    Subscription updates that name a ``price`` are forwarded with that id as the ``plan`` and
    without ``proration_behavior`` (localstripe always prorates and crashes on the parameter).
    """

    forward_to: str | None
    prices: dict[str, dict[str, Any]] = field(default_factory=dict)
    checkout_sessions: dict[str, dict[str, Any]] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)

    def client(self) -> stripe.HTTPClient:
        recorder = self

        class Client(HTTPXClient):
            async def request_async(self, method: str, url: str, headers: Any, post_data: Any = None) -> Any:
                return await recorder.handle(self, method, url, headers, post_data)

        return Client()

    async def handle(self, http: Any, method: str, url: str, headers: Any, post_data: Any) -> Any:
        parts = urlsplit(url)
        params = unflatten(parse_qsl(post_data or parts.query or "", keep_blank_values=True))
        answer = self._answer(method.upper(), parts.path, params)
        if isinstance(answer, Forward) and answer.then is not None:
            self.calls.append(Call(method.upper(), parts.path, params, True))
            assert answer.mirror is not None
            await HTTPXClient.request_async(http, "POST", self._target("/v1/plans"), headers, urlencode(answer.mirror))
            status, body = answer.then
            return json.dumps(body).encode(), status, {"request-id": "req_recorded"}
        if answer is not None and not isinstance(answer, Forward):
            self.calls.append(Call(method.upper(), parts.path, params, True))
            status, body = answer
            return json.dumps(body).encode(), status, {"request-id": "req_recorded"}
        self.calls.append(Call(method.upper(), parts.path, params, False))
        target_path, body = parts.path, post_data
        if isinstance(answer, Forward):
            target_path, body = answer.path, answer.body
        if self.forward_to is None:
            error = {"error": {"type": "invalid_request_error", "message": f"Unrecorded request {method} {parts.path}"}}
            return json.dumps(error).encode(), 404, {}
        target = self._target(target_path) + (("?" + parts.query) if parts.query and method.upper() == "GET" else "")
        return await HTTPXClient.request_async(http, method, target, headers, body)

    def _target(self, path: str) -> str:
        assert self.forward_to is not None
        return self.forward_to.rstrip("/") + path

    def _answer(self, method: str, path: str, params: dict[str, Any]) -> Any:
        now = int(time.time())
        if path == "/v1/prices" and method == "GET":
            keys = params.get("lookup_keys") or []
            found = [p for p in self.prices.values() if p.get("lookup_key") in keys]
            if params.get("active") == "true":
                found = [p for p in found if p["active"]]
            return 200, {"object": "list", "url": "/v1/prices", "has_more": False, "data": found}
        if path == "/v1/prices" and method == "POST":
            price_id = "price_" + secrets.token_hex(8)
            if params.get("transfer_lookup_key") == "true":
                for other in self.prices.values():
                    if other.get("lookup_key") == params.get("lookup_key"):
                        other["lookup_key"] = None
            recurring = params.get("recurring") or {}
            price = {
                "id": price_id, "object": "price", "active": True, "billing_scheme": "per_unit", "created": now,
                "currency": params["currency"], "livemode": False, "lookup_key": params.get("lookup_key"),
                "metadata": params.get("metadata") or {}, "nickname": params.get("nickname"), "product": params["product"],
                "recurring": {"interval": recurring.get("interval"), "interval_count": int(recurring.get("interval_count") or 1),
                              "usage_type": "licensed", "meter": None, "trial_period_days": None},
                "tax_behavior": "unspecified", "tiers_mode": None, "transform_quantity": None, "type": "recurring",
                "unit_amount": int(params["unit_amount"]), "unit_amount_decimal": str(params["unit_amount"]),
            }
            self.prices[price_id] = price
            if self.forward_to is not None:
                mirror = {"id": price_id, "amount": price["unit_amount"], "currency": price["currency"],
                          "interval": recurring.get("interval"), "product": params["product"], "nickname": params.get("nickname") or ""}
                mirror.update({f"metadata[{k}]": v for k, v in price["metadata"].items()})
                return Forward("GET", "/v1/customers", None, mirror=mirror, then=(200, price))
            return 200, price
        if path.startswith("/v1/prices/") and method == "POST":
            price = self.prices[path.rsplit("/", 1)[1]]
            if "active" in params:
                price["active"] = params["active"] == "true"
            return 200, price
        if path == "/v1/checkout/sessions" and method == "POST":
            session_id = "cs_test_" + secrets.token_hex(12)
            session = {
                "id": session_id, "object": "checkout.session", "mode": params.get("mode"), "status": "open",
                "customer": params.get("customer"), "client_reference_id": params.get("client_reference_id"),
                "metadata": params.get("metadata") or {}, "success_url": params.get("success_url"),
                "cancel_url": params.get("cancel_url"), "subscription": None, "payment_status": "unpaid",
                "url": f"https://checkout.stripe.com/c/pay/{session_id}", "livemode": False, "created": now,
                "expires_at": now + 86400, "currency": "brl",
            }
            self.checkout_sessions[session_id] = {"session": session, "params": params}
            return 200, session
        if path == "/v1/billing_portal/sessions" and method == "POST":
            session_id = "bps_" + secrets.token_hex(12)
            return 200, {"id": session_id, "object": "billing_portal.session", "customer": params.get("customer"),
                         "return_url": params.get("return_url"), "url": f"https://billing.stripe.com/p/session/test_{session_id}",
                         "livemode": False, "created": now, "configuration": "bpc_test", "flow": None, "locale": None,
                         "on_behalf_of": None}
        if path.startswith("/v1/subscriptions/") and method == "POST" and ("proration_behavior" in params or any(
                isinstance(item, dict) and "price" in item for item in params.get("items") or [])):
            pairs = []
            for index, item in enumerate(params.get("items") or []):
                if "id" in item:
                    pairs.append((f"items[{index}][id]", item["id"]))
                if "price" in item:
                    pairs.append((f"items[{index}][plan]", item["price"]))
            for key in ("cancel_at_period_end",):
                if key in params:
                    pairs.append((key, params[key]))
            for key, value in (params.get("metadata") or {}).items():
                pairs.append((f"metadata[{key}]", value))
            return Forward("POST", path, urlencode(pairs))
        return None


@dataclass
class Forward:
    method: str
    path: str
    body: str | None
    mirror: dict[str, Any] | None = None
    then: Any = None




# ---------------------------------------------------------------------------------------------
# Identity, plugins, harness, HTTP server
# ---------------------------------------------------------------------------------------------


class HeaderIdentity:
    """A test identity plugin: ``X-Test-Tenant`` names the caller's tenant; ``X-Test-Permissions`` its permissions."""

    @hookimpl
    def actor_from_request(self, kernel: Any, request: Request) -> Actor | None:
        tenant = request.headers.get("x-test-tenant")
        if not tenant:
            return None
        permissions = frozenset(p for p in request.headers.get("x-test-permissions", "").split(",") if p)
        attributes = {"email": f"{tenant}@example.test", "name": f"Trader {tenant}"}
        if "x-test-email-verified" in request.headers:  # the kernel's well-known attribute, as the auth plugin sets it
            attributes["email_verified"] = request.headers["x-test-email-verified"] == "true"
        return Actor(id=f"user-{tenant}", kind="user", tenant_id=tenant, permissions=permissions, attributes=attributes)


def tenant_headers(tenant: str, *permissions: str) -> dict[str, str]:
    headers = {"X-Test-Tenant": tenant}
    if permissions:
        headers["X-Test-Permissions"] = ",".join(permissions)
    return headers


def billing_settings(*, api_base: str | None = None, keys: bool = True, **extra: Any) -> dict[str, Any]:
    section: dict[str, Any] = {"lookup_key_prefix": "botcriptofy"}
    if keys:
        section.update(secret_key=SECRET_KEY, webhook_secret=WEBHOOK_SECRET, max_network_retries=0)
    if api_base:
        section["api_base"] = api_base
    section.update(extra)
    return section


def storage_plugins() -> dict[str, Any]:
    import botcriptofy_storage

    return {"storage": botcriptofy_storage}


@dataclass
class BillingEnv:
    harness: Any
    recorder: RecordedStripe
    localstripe: LocalStripe | None
    opened: list[stripe.HTTPClient] = field(default_factory=list)

    @property
    def client(self) -> Any:
        return self.harness.client

    @property
    def kernel(self) -> Any:
        return self.harness.kernel

    async def post_event(self, event: dict[str, Any], *, secret: str = WEBHOOK_SECRET, timestamp: int | None = None,
                         client: Any = None) -> Any:
        body = json.dumps(event)
        header = sign(body, secret, timestamp=timestamp)
        return await (client or self.client).post("/v1/billing/webhook", content=body,
                                                  headers={"Stripe-Signature": header, "Content-Type": "application/json"})

    def stripe_client(self) -> stripe.StripeClient:
        """The official client as the test (playing Stripe's hosted pages) uses it, through the same recorder."""
        http = self.recorder.client()
        self.opened.append(http)
        return stripe.StripeClient(SECRET_KEY, base_addresses={"api": self.localstripe.url if self.localstripe else "http://recorded"},
                                   http_client=http, max_network_retries=0)


@pytest.fixture
async def make_billing(kernel_harness: Any, make_postgres_database: Any, database_url: str) -> AsyncIterator[Callable[..., Any]]:
    """Build a kernel with storage (on ``database_url``), billing and the test identity plugin.

    ``make_postgres_database`` is requested first so that ``database_url`` (which looks it up from
    inside an async fixture) finds it already set up.
    """

    async def make(*, localstripe: LocalStripe | None = None, settings: dict[str, Any] | None = None,
                   keys: bool = True, extra_plugins: dict[str, Any] | None = None) -> BillingEnv:
        recorder = RecordedStripe(forward_to=localstripe.url if localstripe else None)
        plugins: dict[str, Any] = {**storage_plugins(), "identity": HeaderIdentity(),
                                   "billing": BillingPlugin(stripe_http_client=recorder.client), **(extra_plugins or {})}
        section = billing_settings(api_base=localstripe.url if localstripe else "http://recorded.invalid", keys=keys)
        section.update(settings or {})
        harness = await kernel_harness(plugins=plugins, settings={"storage": {"url": database_url}, "billing": section})
        env = BillingEnv(harness=harness, recorder=recorder, localstripe=localstripe)
        made.append(env)
        return env

    made: list[BillingEnv] = []
    yield make
    for env in made:
        for http in env.opened:
            await http.close_async()


@dataclass
class AppServer:
    url: str
    server: Any
    task: asyncio.Task[None]


@pytest.fixture
async def serve_app() -> AsyncIterator[Callable[[Any], Any]]:
    """Serve a harness's runtime with uvicorn on a free loopback port (so localstripe can call it)."""
    import uvicorn

    servers: list[AppServer] = []

    async def start(harness: Any) -> AppServer:
        port = free_port()
        config = uvicorn.Config(harness.runtime, host="127.0.0.1", port=port, lifespan="off", log_level="warning",
                                http="h11", ws="none", access_log=False, timeout_keep_alive=KEEP_ALIVE)
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve())
        deadline = time.monotonic() + 10
        while not server.started:
            if task.done() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            await asyncio.sleep(0.02)
        found = AppServer(url=f"http://127.0.0.1:{port}", server=server, task=task)
        servers.append(found)
        return found

    yield start
    for found in servers:
        found.server.should_exit = True
        await asyncio.wait_for(found.task, 10)


@pytest.fixture
def outbox_events() -> Callable[[Any], Any]:
    """Read the events billing wrote to the storage outbox (type and payload), oldest first."""

    async def read(kernel: Any, event_type: str | None = None) -> list[dict[str, Any]]:
        from sqlalchemy import text

        async with kernel.database().session(system=True) as session:
            rows = (await session.execute(text("SELECT type, payload, idempotency_key FROM botcriptofy_outbox ORDER BY created_at"))).all()
        found = []
        for kind, payload, key in rows:
            if isinstance(payload, str):
                payload = json.loads(payload)
            if event_type is None or kind == event_type:
                found.append({"type": kind, "payload": payload, "key": key})
        return found

    return read




# ---------------------------------------------------------------------------------------------
# Stripe objects and events in Stripe's documented shapes (API version 2026-10-28)
# ---------------------------------------------------------------------------------------------


def price_obj(plan: str, interval: str = "month", price_id: str | None = None) -> dict[str, Any]:
    from botcriptofy_billing import CATALOG

    return {
        "id": price_id or f"price_{plan}_{interval}", "object": "price", "active": True, "billing_scheme": "per_unit",
        "currency": "brl", "livemode": False, "lookup_key": f"botcriptofy_{plan}_{interval}",
        "metadata": {"botcriptofy_plan": plan, "botcriptofy_interval": interval}, "nickname": None, "product": f"botcriptofy_{plan}",
        "recurring": {"interval": interval, "interval_count": 1, "usage_type": "licensed", "meter": None, "trial_period_days": None},
        "tax_behavior": "unspecified", "type": "recurring", "unit_amount": CATALOG[plan].price(interval).amount_minor,
    }


def subscription_obj(sub_id: str, *, customer: str, status: str, plan: str = "pro", interval: str = "month",
                     tenant: str | None = None, trial_end: int | None = None, cancel_at_period_end: bool = False,
                     period_end: int | None = None, canceled_at: int | None = None) -> dict[str, Any]:
    now = int(time.time())
    return {
        "id": sub_id, "object": "subscription", "customer": customer, "status": status, "currency": "brl", "livemode": False,
        "cancel_at": None, "cancel_at_period_end": cancel_at_period_end, "canceled_at": canceled_at,
        "ended_at": canceled_at if status == "canceled" else None, "created": now, "start_date": now,
        "trial_start": now if trial_end else None, "trial_end": trial_end, "collection_method": "charge_automatically",
        "metadata": {"tenant_id": tenant, "botcriptofy_plan": plan} if tenant else {}, "latest_invoice": None,
        "items": {"object": "list", "has_more": False, "url": f"/v1/subscription_items?subscription={sub_id}", "data": [{
            "id": f"si_{sub_id}", "object": "subscription_item", "price": price_obj(plan, interval), "quantity": 1,
            "subscription": sub_id, "current_period_start": now, "current_period_end": period_end or now + 30 * 86400,
            "metadata": {}, "created": now,
        }]},
    }


def invoice_obj(invoice_id: str, *, customer: str, subscription: str | None, amount: int, paid: bool, attempt_count: int = 1,
                next_payment_attempt: int | None = None) -> dict[str, Any]:
    return {
        "id": invoice_id, "object": "invoice", "customer": customer, "currency": "brl", "amount_due": amount,
        "amount_paid": amount if paid else 0, "amount_remaining": 0 if paid else amount, "attempt_count": attempt_count,
        "attempted": True, "billing_reason": "subscription_cycle", "status": "paid" if paid else "open",
        "next_payment_attempt": None if paid else next_payment_attempt, "livemode": False, "created": int(time.time()),
        "parent": {"type": "subscription_details", "quote_details": None,
                   "subscription_details": {"subscription": subscription, "metadata": {}}} if subscription else None,
    }


def checkout_completed_obj(session_id: str, *, customer: str, subscription: str, tenant: str) -> dict[str, Any]:
    return {
        "id": session_id, "object": "checkout.session", "mode": "subscription", "status": "complete", "payment_status": "paid",
        "customer": customer, "subscription": subscription, "client_reference_id": tenant, "metadata": {"tenant_id": tenant},
        "livemode": False, "created": int(time.time()), "currency": "brl", "url": None,
    }


def event_obj(kind: str, obj: dict[str, Any], *, created: int | None = None, event_id: str | None = None) -> dict[str, Any]:
    return {
        "id": event_id or "evt_" + secrets.token_hex(12), "object": "event", "api_version": "2026-10-28.endive",
        "created": created if created is not None else int(time.time()), "type": kind, "data": {"object": obj},
        "livemode": False, "pending_webhooks": 1, "request": {"id": None, "idempotency_key": None},
    }
