"""The consent ledger: grants and revocations with evidence, history, kernel.has_consent, validation."""

from __future__ import annotations

import sqlalchemy as sa

from botcriptofy_lgpd._models import consents
from support import signup


async def test_grant_revoke_and_history(make_privacy):
    harness = await make_privacy()
    client, kernel = harness.client, harness.kernel
    ana = await signup(client, "ana@example.com")
    user_id = ana["user"]["id"]

    listed = (await client.get("/v1/privacy/consents", headers=ana["headers"])).json()
    by_name = {p["purpose"]: p for p in listed["purposes"]}
    assert by_name["essential"]["granted"] and by_name["essential"]["required"]
    assert not by_name["marketing_email"]["granted"] and listed["history"] == []
    assert await kernel.has_consent(user_id, "essential") is True
    assert await kernel.has_consent(user_id, "marketing_email") is False

    granted = await client.put(
        "/v1/privacy/consents", json={"consents": {"marketing_email": True, "analytics": True}}, headers=ana["headers"]
    )
    assert granted.status_code == 200, granted.text
    assert sorted(c["purpose"] for c in granted.json()["changed"]) == ["analytics", "marketing_email"]
    assert await kernel.has_consent(user_id, "marketing_email") is True
    # The same decision again records nothing new.
    again = await client.put("/v1/privacy/consents", json={"consents": {"marketing_email": True}}, headers=ana["headers"])
    assert again.json()["changed"] == []

    revoked = await client.put(
        "/v1/privacy/consents", json={"consents": {"marketing_email": False}, "channel": "mobile"}, headers=ana["headers"]
    )
    assert revoked.json()["changed"] == [{"purpose": "marketing_email", "granted": False}]
    assert await kernel.has_consent(user_id, "marketing_email") is False
    assert await kernel.has_consent(user_id, "analytics") is True

    history = (await client.get("/v1/privacy/consents", headers=ana["headers"])).json()["history"]
    assert [(h["purpose"], h["granted"], h["channel"]) for h in history] == [
        ("analytics", True, "web"),
        ("marketing_email", True, "web"),
        ("marketing_email", False, "mobile"),
    ]
    policy = kernel.settings_for("lgpd").purposes["marketing_email"]
    assert all(h["policy_hash"] == policy.policy_hash and h["policy_version"] == policy.policy_version for h in history[1:])
    assert history[0]["client_address"] and history[0]["recorded_at"]

    # The revocation is a completed request of its own, on the requests page.
    kinds = [r["kind"] for r in (await client.get("/v1/privacy/requests", headers=ana["headers"])).json()["requests"]]
    assert kinds == ["revocation"]


async def test_consent_changes_are_validated_and_audited(make_privacy):
    harness = await make_privacy()
    client = harness.client
    ana = await signup(client, "ana@example.com")
    bad = await client.put("/v1/privacy/consents", json={"consents": {"telepathy": True, "essential": False}}, headers=ana["headers"])
    assert bad.status_code == 422
    assert sorted(e["field"] for e in bad.json()["errors"]) == ["consents.essential", "consents.telepathy"]
    assert (
        await client.put("/v1/privacy/consents", json={"consents": {"analytics": "yes please"}}, headers=ana["headers"])
    ).status_code == 422
    assert (await client.get("/v1/privacy/consents")).status_code == 401
    await client.put("/v1/privacy/consents", json={"consents": {"analytics": True}}, headers=ana["headers"])
    trail = (await client.get("/v1/audit", params={"action": "privacy.consent"}, headers=ana["headers"])).json()["entries"]
    assert [e["action"] for e in trail] == ["privacy.consent_granted"] and trail[0]["details"]["purpose"] == "analytics"


async def test_the_ledger_refuses_rewriting_evidence(make_privacy):
    harness = await make_privacy()
    ana = await signup(harness.client, "ana@example.com")
    await harness.client.put("/v1/privacy/consents", json={"consents": {"analytics": True}}, headers=ana["headers"])
    database = harness.kernel.database()
    try:
        async with database.session(system=True) as session:
            await session.execute(sa.update(consents).values(granted=False))
    except sa.exc.DBAPIError as error:
        assert "append-only" in str(error)
    else:
        raise AssertionError("the ledger accepted a rewritten grant")
