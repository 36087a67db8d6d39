"""Exports, erasure with legal holds, deadlines, the DPO's view, and privacy-hook coverage of every table."""

from __future__ import annotations

import io
import json
import zipfile
from datetime import timedelta

import sqlalchemy as sa

from botcriptofy.testing import wait_until
from botcriptofy_billing._models import Customer, QuotaUsage, Subscription, WebhookEvent
from botcriptofy_lgpd import _requests
from support import STRONG_PASSWORD, signup, staff


async def _billing_data(kernel, tenant_id: str, customer: str = "cus_ZQX123external") -> None:
    async with kernel.database().session(system=True) as session:
        session.add(
            Customer(tenant_id=tenant_id, stripe_customer_id=customer, assigned_plan=None, had_trial=True, created_at=1, updated_at=1)
        )
        session.add(
            Subscription(
                id="sub_ZQX1",
                tenant_id=tenant_id,
                customer_id=customer,
                plan="pro",
                interval="month",
                status="active",
                price_id="price_1",
                state_as_of=1.0,
                created_at=1,
                updated_at=1,
                cancel_at_period_end=False,
                dunning_exhausted=False,
            )
        )
        session.add(
            WebhookEvent(
                id="evt_ZQX1", type="customer.created", created=1, object_id=customer, tenant=tenant_id, outcome="ignored", received_at=1
            )
        )
        session.add(
            WebhookEvent(
                id="evt_ZQX2", type="invoice.paid", created=2, object_id="in_ZQX1", tenant=tenant_id, outcome="applied", received_at=2
            )
        )
        session.add(
            QuotaUsage(tenant_id=tenant_id, quota="api_calls", period="2026-11", used=5, warned=False, exhausted=False, updated_at=1)
        )


async def _finished(client, headers, request_id):
    async def done():
        found = (await client.get(f"/v1/privacy/requests/{request_id}", headers=headers)).json()
        return found if found["status"] == "completed" else None

    await wait_until(done, timeout=10)
    return await done()


async def test_export_gathers_every_plugin_into_an_encrypted_zip_with_an_expiring_link(make_privacy):
    harness = await make_privacy()
    client, kernel = harness.client, harness.kernel
    ana = await signup(client, "ana@example.com", name="Ana Export")
    await _billing_data(kernel, ana["tenant"]["id"])
    await client.put("/v1/privacy/consents", json={"consents": {"analytics": True}}, headers=ana["headers"])

    async def signup_audited() -> bool:  # the audit records the sign-up from its event, after the relay delivers it
        async with kernel.database().session(system=True) as session:
            return bool((await session.execute(sa.text("SELECT count(*) FROM audit_entries WHERE action = 'auth.signup'"))).scalar())

    await wait_until(signup_audited, timeout=15)
    created = await client.post("/v1/privacy/exports", headers=ana["headers"])
    assert created.status_code == 202, created.text
    request_id = created.json()["id"]
    assert created.json()["deadline_at"] > created.json()["received_at"]
    status = await _finished(client, ana["headers"], request_id)
    assert set(status["report"]["plugins"]) >= {"auth", "billing", "lgpd", "audit"}
    assert [s["step"] for s in status["steps"]] == ["received", "processing", "completed"]

    stored = next((harness.state_dir / "lgpd" / "exports").glob("*.enc")).read_bytes()
    assert b"ana@example.com" not in stored and not stored.startswith(b"PK")  # encrypted at rest

    download = await client.get(status["download"]["url"], headers=ana["headers"])
    assert download.status_code == 200 and download.headers["content-type"] == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(download.content))
    manifest = json.loads(archive.read("manifest.json"))
    data = json.loads(archive.read("data.json"))
    assert manifest["request_id"] == request_id and set(manifest["plugins"]) == set(data["plugins"])
    assert data["plugins"]["auth"]["user"]["email"] == "ana@example.com"
    assert data["plugins"]["billing"]["customer"]["stripe_customer_id"] == "cus_ZQX123external"
    assert data["plugins"]["lgpd"]["consents"][0]["purpose"] == "analytics"
    assert any(e["action"] == "auth.signup" for e in data["plugins"]["audit"]["entries"])

    # Another tenant cannot see the request or download it, even with the link.
    bruno = await signup(client, "bruno@example.com")
    assert (await client.get(status["download"]["url"], headers=bruno["headers"])).status_code == 404
    assert (await client.get(f"/v1/privacy/requests/{request_id}", headers=bruno["headers"])).status_code == 404
    assert (await client.get("/v1/privacy/requests/not-a-uuid%00", headers=ana["headers"])).status_code == 404
    assert (await client.get("/v1/privacy/exports/x/download", params={"token": "t"}, headers=ana["headers"])).status_code == 404
    forged = status["download"]["url"].split("token=")[0] + "token=" + "0" * 64
    assert (await client.get(forged, headers=ana["headers"])).status_code == 403
    # A token that is not even ASCII is a wrong token too, not a server error.
    link = status["download"]["url"].split("?")[0]
    assert (await client.get(link, params={"token": "é" * 64}, headers=ana["headers"])).status_code == 403

    # The link expires.
    async with kernel.database().session(system=True) as session:
        await session.execute(
            sa.update(_requests.requests)
            .where(_requests.requests.c.id == request_id)
            .values(download_expires_at=_requests.utcnow() - timedelta(seconds=1))
        )
    expired = (await client.get(f"/v1/privacy/requests/{request_id}", headers=ana["headers"])).json()["download"]
    assert expired["expired"]
    assert (await client.get(expired["url"], headers=ana["headers"])).status_code == 410


async def test_erasure_needs_fresh_credentials(make_privacy):
    harness = await make_privacy()
    ana = await signup(harness.client, "ana@example.com")
    wrong = await harness.client.post(
        "/v1/privacy/erasure", json={"password": "not my password at all", "confirm": True}, headers=ana["headers"]
    )
    assert wrong.status_code == 401 and wrong.json()["errors"][0]["field"] == "password"
    unconfirmed = await harness.client.post(
        "/v1/privacy/erasure", json={"password": STRONG_PASSWORD, "confirm": False}, headers=ana["headers"]
    )
    assert unconfirmed.status_code == 422
    still = await harness.client.get("/v1/me", headers=ana["headers"])
    assert still.status_code == 200 and still.json()["user"]["email"] == "ana@example.com"


async def test_a_request_past_its_deadline_is_flagged(make_privacy):
    harness = await make_privacy()
    client, kernel = harness.client, harness.kernel
    ana = await signup(client, "ana@example.com")
    created = await client.post("/v1/privacy/corrections", json={"fields": {"name": "Ana Maria"}}, headers=ana["headers"])
    assert created.status_code == 202
    request_id = created.json()["id"]
    assert not created.json()["overdue"] and created.json()["days_left"] == 14
    counts = await _requests.sweep(kernel, now=_requests.utcnow() + timedelta(days=13))
    assert counts["reminded"] == 1
    counts = await _requests.sweep(kernel, now=_requests.utcnow() + timedelta(days=16))
    assert counts["overdue"] == 1
    async with kernel.database().session(system=True) as session:
        await session.execute(
            sa.update(_requests.requests)
            .where(_requests.requests.c.id == request_id)
            .values(deadline_at=_requests.utcnow() - timedelta(days=1))
        )
    dpo = await staff(harness, "dpo@botcriptofy.example", {"audit": "manager"})
    late = (await client.get("/v1/admin/privacy/requests", params={"overdue": "true"}, headers=dpo)).json()["requests"]
    assert [r["id"] for r in late] == [request_id] and late[0]["overdue"]
    assert "overdue" in [s["step"] for s in late[0]["steps"]]
    trail = (await client.get("/v1/audit", params={"action": "privacy.request_overdue"}, headers=dpo)).json()["entries"]
    assert trail and trail[0]["subject"] == ana["user"]["id"]
    near = (await client.get("/v1/audit", params={"action": "privacy.request_deadline_near"}, headers=dpo)).json()["entries"]
    assert [(e["subject"], e["outcome"], e["details"]["days_left"]) for e in near] == [(ana["user"]["id"], "success", 1)]
    # A trader is not the DPO.
    assert (await client.get("/v1/admin/privacy/requests", headers=ana["headers"])).status_code == 403
    done = await client.post(f"/v1/admin/privacy/requests/{request_id}/complete", json={"note": "name corrected"}, headers=dpo)
    assert done.status_code == 200 and done.json()["status"] == "completed"
