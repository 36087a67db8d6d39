"""Auth's ``/user`` staff command over ``POST /v1/staff/commands/user`` and ``email:`` recipients, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

import botcriptofy_auth
import botcriptofy_notifications
import botcriptofy_storage
from botcriptofy import hookimpl
from botcriptofy_auth._accounts import create_staff, set_blocked
from botcriptofy_auth._staff_commands import mask_email, mask_ip, mask_name

PASSWORD = "correct horse battery staple"
FAST_HASH = {"argon2_time_cost": 1, "argon2_memory_cost": 1024, "argon2_parallelism": 1}


class AuditRecorder:
    def __init__(self) -> None:
        self.records: list = []

    @hookimpl
    def record_audit(self, kernel, record):
        self.records.append(record)


@pytest.fixture
async def staff_kernel(kernel_harness, database_url):
    recorder = AuditRecorder()
    plugins = {"storage": botcriptofy_storage, "auth": botcriptofy_auth, "notifications": botcriptofy_notifications, "audit": recorder}
    settings = {"storage": {"url": database_url, "relay_poll_interval": 0.05}, "auth": FAST_HASH, "notifications": {"poll_interval": 0.05}}
    harness = await kernel_harness(plugins=plugins, settings=settings)
    harness.audit = recorder
    return harness


async def staff(harness, email, roles):
    user = await create_staff(harness.kernel, email=email, name="Staff Person", password=PASSWORD, roles=roles, by="test")
    response = await harness.client.post("/v1/auth/login", json={"email": email, "password": PASSWORD})
    assert response.status_code == 200, response.text
    return str(user.id), {"Authorization": f"Bearer {response.json()['access_token']}"}


async def run(harness, headers, locale="pt-BR", **arguments):
    return await harness.client.post("/v1/staff/commands/user", headers=headers, json={"arguments": arguments, "locale": locale})


def test_masks_keep_enough_to_tell_accounts_apart():
    assert mask_email("ana.souza@example.com.br") == "a***@e***.br"
    assert mask_name("Ana Souza") == "A*** S***"
    assert mask_ip("203.0.113.7") == "203.0.113.x"
    assert mask_ip("2001:db8:85a3::8a2e:370:7334") == "2001:0db8:85a3::x"
    assert mask_email(None) is None and mask_ip("not-an-address") == "***"


async def test_user_lookup_shows_status_roles_and_last_login_masked_without_users_pii(staff_kernel):
    harness = staff_kernel
    signup = await harness.client.post(
        "/v1/auth/signup",
        json={"email": "Ana.Souza@Example.com", "password": PASSWORD, "name": "Ana Souza", "account_type": "trader"},
        headers={"X-Forwarded-For": "203.0.113.7"},
    )
    assert signup.status_code == 201, signup.text
    trader, tenant = signup.json()["user"]["id"], signup.json()["tenant"]["id"]
    login = await harness.client.post("/v1/auth/login", json={"email": "ana.souza@example.com", "password": PASSWORD})
    assert login.status_code == 200

    viewer_id, viewer = await staff(harness, "sac@example.com", {"support": "viewer"})
    _, member = await staff(harness, "sec@example.com", {"security": "member"})

    masked = await run(harness, viewer, email="ANA.SOUZA@example.com")
    assert masked.status_code == 200, masked.text
    data = masked.json()["data"]
    assert data["found"] is True and data["pii"] is False
    assert (data["id"], data["tenant_id"], data["tenant_type"], data["status"]) == (trader, tenant, "trader", "active")
    assert data["email"] == "a***@e***.com" and data["name"] == "A*** S***"
    assert data["email_verified"] is False and data["locked"] is False and data["roles"] == {}
    assert data["last_login_at"] is not None and data["last_login_method"] == "password"
    assert data["last_login_ip"] is None or data["last_login_ip"].endswith(".x")
    text = masked.json()["text"]
    assert "ana.souza@example.com" not in text and "Ana Souza" not in text
    assert text.splitlines()[0] == "A*** S*** <a***@e***.com>" and "Dados pessoais mascarados (falta users:pii)." in text
    assert "Status: active" in text and "E-mail verificado: não" in text

    full = (await run(harness, member, locale="en", email="ana.souza@example.com")).json()
    assert full["data"]["pii"] is True and full["data"]["email"] == "ana.souza@example.com" and full["data"]["name"] == "Ana Souza"
    assert full["text"].splitlines()[0] == "Ana Souza <ana.souza@example.com>" and "masked" not in full["text"]

    # Staff: roles are shown; a blocked account still answers, with its status.
    staff_view = (await run(harness, member, email="sac@example.com")).json()["data"]
    assert staff_view["roles"] == {"support": "viewer"} and staff_view["tenant_type"] == "company"
    await set_blocked(harness.kernel, user_id=trader, blocked=True, reason="test", by="test")
    blocked = (await run(harness, viewer, locale="en", email="ana.souza@example.com")).json()
    assert blocked["data"]["status"] == "disabled" and "Status: disabled" in blocked["text"]

    nobody = (await run(harness, viewer, locale="en", email="nobody@example.com")).json()
    assert nobody == {"text": "No account has that e-mail.", "buttons": [], "data": {"found": False}}

    lookups = [r for r in harness.audit.records if r.action == "auth.user_lookup"]
    assert (lookups[0].actor_id, lookups[0].target, lookups[0].outcome) == (viewer_id, f"user:{trader}", "success")
    assert lookups[0].details == {"channel": "http", "pii": False, "tenant_id": tenant}
    assert lookups[1].details == {"channel": "http", "pii": True, "tenant_id": tenant}
    assert lookups[-1].outcome == "not_found"


async def test_user_refusals_usage_and_email_recipients(staff_kernel):
    harness = staff_kernel
    signup = await harness.client.post(
        "/v1/auth/signup", json={"email": "bia@example.com", "password": PASSWORD, "name": "Bia", "account_type": "trader"}
    )
    trader, tenant = signup.json()["user"]["id"], signup.json()["tenant"]["id"]
    _, finance = await staff(harness, "fin@example.com", {"finance": "manager"})
    _, support = await staff(harness, "sac@example.com", {"support": "viewer"})
    _, security = await staff(harness, "sec@example.com", {"security": "viewer"})

    refused = await run(harness, finance, email="bia@example.com")
    assert refused.status_code == 403 and "users:read" in refused.json()["detail"]
    assert "user" not in {c["name"] for c in (await harness.client.get("/v1/staff/commands", headers=finance)).json()}
    listed = {c["name"]: c for c in (await harness.client.get("/v1/staff/commands", headers={**support, "Accept-Language": "en"})).json()}
    assert listed["user"]["usage"] == "/user <email>" and listed["user"]["permission"] == "users:read"
    assert listed["user"]["description"] == "Account by e-mail: status, roles, verification, creation, last login"
    for arguments in ({}, {"email": "not-an-address"}, {"email": "a@b"}):
        bad = await run(harness, support, **arguments)
        assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "email" and "Usage: /user <email>" in bad.json()["detail"]

    # The users:pii permission is in the catalogue with its default grants.
    catalogue = await harness.client.get("/v1/admin/permissions", headers=security)
    assert catalogue.status_code == 200, catalogue.text
    entry = next(p for p in catalogue.json() if p["name"] == "users:pii")
    assert (sorted(entry["grants"]), entry["plugin"]) == (["security:member", "support:member"], "auth")
    masked = (await run(harness, security, email="bia@example.com")).json()["data"]
    assert masked["pii"] is False and masked["email"] == "b***@e***.com"  # a security viewer sees it masked

    # email:<address> resolves the active account (normalised), nobody once it is blocked or unknown.
    found = await harness.kernel.resolve_recipients("email:BIA@example.com")
    assert [(r.user_id, r.tenant_id, r.email) for r in found] == [(trader, tenant, "bia@example.com")]
    assert await harness.kernel.resolve_recipients("email:nobody@example.com") == []
    assert await harness.kernel.resolve_recipients("email:not an address") == []
    await set_blocked(harness.kernel, user_id=trader, blocked=True, reason="test", by="test")
    assert await harness.kernel.resolve_recipients("email:bia@example.com") == []
