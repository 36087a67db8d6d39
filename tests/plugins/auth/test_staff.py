"""Company staff: the super-admin bootstrap, TOTP, department roles (RBAC) and service principals for the agents."""

from __future__ import annotations

import time

import pyotp

from botcriptofy import Permission, Route, hookimpl
from botcriptofy.testing import wait_until
from botcriptofy_auth import _totp
from botcriptofy_auth._accounts import approve_influencer
from botcriptofy_auth._cli import create_admin, service_token

from .conftest import STRONG_PASSWORD, Recorder, bearer, login, signup, verify

ADMIN = "owner@botcriptofy.example"


class Guarded:
    """Routes guarded by department permissions, the way other plugins declare them."""

    @hookimpl
    def register_permissions(self, kernel):
        return [Permission("billing:refund", "Refund a payment.", frozenset({"finance:member"}))]

    @hookimpl
    def register_routes(self, kernel):
        async def ok(request):
            return {"ok": True}

        return [
            Route("/v1/test/refund", ok, methods=["POST"], permission="billing:refund", name="refund"),
            Route("/v1/test/finance-approve", ok, methods=["POST"], permission="finance:approve", name="finance_approve"),
            Route("/v1/test/finance-read", ok, permission="finance:read", name="finance_read"),
            Route("/v1/test/security-block", ok, methods=["POST"], permission="users:block", name="security_block"),
        ]


async def _admin(harness) -> tuple[str, str]:
    made = await create_admin(harness.kernel, email=ADMIN, name="Owner", password=STRONG_PASSWORD)
    code = _totp.code_for(made["totp_secret"])
    response = await login(harness.client, ADMIN, totp_code=code)
    assert response.status_code == 200, response.text
    return response.json()["access_token"], made["totp_secret"]


async def test_super_admin_needs_totp(make_auth):
    recorder = Recorder()
    harness = await make_auth(plugins={"recorder": recorder})
    made = await create_admin(harness.kernel, email=ADMIN, name="Owner", password=STRONG_PASSWORD)
    assert made["otpauth_uri"].startswith("otpauth://totp/")

    missing = await login(harness.client, ADMIN)
    assert missing.status_code == 401
    assert missing.json()["type"].endswith("/totp-required") and missing.json()["errors"][0]["field"] == "totp_code"
    wrong = await login(harness.client, ADMIN, totp_code=_totp.code_for(made["totp_secret"], now=time.time() + 3600))
    assert wrong.status_code == 401
    code = _totp.code_for(made["totp_secret"])
    ok = await login(harness.client, ADMIN, totp_code=code)
    assert ok.status_code == 200
    replay = await login(harness.client, ADMIN, totp_code=code)
    assert replay.status_code == 401  # a code works once

    me = (await harness.client.get("/v1/me", headers=bearer(ok.json()["access_token"]))).json()
    assert me["user"]["super_admin"] and me["tenant"]["type"] == "company" and me["user"]["totp_enabled"]
    assert len(me["roles"]) == 10 and set(me["roles"].values()) == {"manager"}
    # The kernel's configuration admin opens to the super-admin.
    assert (await harness.client.get("/v1/admin/config", headers=bearer(ok.json()["access_token"]))).status_code == 200
    # A bad TOTP code counts towards the lockout like a bad password.
    await wait_until(lambda: [f for f in recorder.of("auth.login_failed") if f["reason"] == "bad_totp"])
    # The super-admin cannot turn TOTP off.
    off = await harness.client.post(
        "/v1/auth/totp/disable",
        headers=bearer(ok.json()["access_token"]),
        json={"code": _totp.code_for(made["totp_secret"], now=time.time() + 30)},
    )
    assert off.status_code == 403


async def test_second_super_admin_needs_another(make_auth):
    import click
    import pytest

    harness = await make_auth()
    await create_admin(harness.kernel, email=ADMIN, name="Owner", password=STRONG_PASSWORD)
    with pytest.raises(click.ClickException, match="already exists"):
        await create_admin(harness.kernel, email="second@botcriptofy.example", name="Second", password=STRONG_PASSWORD)
    await create_admin(harness.kernel, email="second@botcriptofy.example", name="Second", password=STRONG_PASSWORD, another=True)


async def test_department_roles_drive_permissions(make_auth):
    harness = await make_auth(plugins={"guarded": Guarded()})
    admin, _ = await _admin(harness)
    created = await harness.client.post(
        "/v1/admin/staff",
        headers=bearer(admin),
        json={"email": "fin@botcriptofy.example", "name": "Fernanda", "password": STRONG_PASSWORD, "roles": {"finance": "member"}},
    )
    assert created.status_code == 201, created.text
    staff_id = created.json()["id"]
    staff = (await login(harness.client, "fin@botcriptofy.example")).json()["access_token"]
    me = (await harness.client.get("/v1/me", headers=bearer(staff))).json()
    assert me["roles"] == {"finance": "member"} and not me["user"]["super_admin"]
    assert "billing:refund" in me["permissions"] and "finance:*" not in me["permissions"]

    assert (await harness.client.post("/v1/test/refund", headers=bearer(staff))).status_code == 200  # member: read + act
    assert (await harness.client.get("/v1/test/finance-read", headers=bearer(staff))).status_code == 200
    assert (await harness.client.post("/v1/test/finance-approve", headers=bearer(staff))).status_code == 403  # manager only
    assert (await harness.client.post("/v1/test/security-block", headers=bearer(staff))).status_code == 403  # another department
    assert (await harness.client.get("/v1/admin/config", headers=bearer(staff))).status_code == 403
    assert (await harness.client.get("/v1/admin/staff", headers=bearer(staff))).status_code == 403

    # Promote to manager: effective on the very next request, without a new login.
    assert (
        await harness.client.put(f"/v1/admin/staff/{staff_id}/roles", headers=bearer(admin), json={"roles": {"finance": "manager"}})
    ).status_code == 204
    assert (await harness.client.post("/v1/test/finance-approve", headers=bearer(staff))).status_code == 200
    # Demote to viewer: read only.
    await harness.client.put(f"/v1/admin/staff/{staff_id}/roles", headers=bearer(admin), json={"roles": {"finance": "viewer"}})
    assert (await harness.client.post("/v1/test/refund", headers=bearer(staff))).status_code == 403
    assert (await harness.client.get("/v1/test/finance-read", headers=bearer(staff))).status_code == 200
    bad = await harness.client.put(f"/v1/admin/staff/{staff_id}/roles", headers=bearer(admin), json={"roles": {"finance": "owner"}})
    assert bad.status_code == 422
    bad = await harness.client.put(f"/v1/admin/staff/{staff_id}/roles", headers=bearer(admin), json={"roles": {"legal": "member"}})
    assert bad.status_code == 422
    listed = (await harness.client.get("/v1/admin/staff", headers=bearer(admin))).json()
    assert {s["email"] for s in listed} == {ADMIN, "fin@botcriptofy.example"}


async def test_extra_grants_apply_live(make_auth):
    harness = await make_auth(plugins={"guarded": Guarded()})
    admin, _ = await _admin(harness)
    await harness.client.post(
        "/v1/admin/staff",
        headers=bearer(admin),
        json={"email": "sec@botcriptofy.example", "name": "Sergio", "password": STRONG_PASSWORD, "roles": {"finance": "viewer"}},
    )
    staff = (await login(harness.client, "sec@botcriptofy.example")).json()["access_token"]
    assert (await harness.client.post("/v1/test/refund", headers=bearer(staff))).status_code == 403
    from .conftest import auth_settings

    settings = auth_settings(harness.kernel.database().url, extra_grants={"finance:viewer": ["billing:refund"]})
    result = await harness.apply(settings)
    assert result.applied and result.changes["reconfigured"] == ["auth"], result
    assert (await harness.client.post("/v1/test/refund", headers=bearer(staff))).status_code == 200


async def test_staff_totp_enrolment_and_requirement(make_auth):
    harness = await make_auth()
    admin, _ = await _admin(harness)
    await harness.client.post(
        "/v1/admin/staff",
        headers=bearer(admin),
        json={"email": "sup@botcriptofy.example", "name": "Sofia", "password": STRONG_PASSWORD, "roles": {"support": "member"}},
    )
    from .conftest import auth_settings

    await harness.apply(auth_settings(harness.kernel.database().url, staff_totp_required=True))
    refused = await login(harness.client, "sup@botcriptofy.example")
    assert refused.status_code == 403 and "TOTP" in refused.json()["detail"]
    await harness.apply(auth_settings(harness.kernel.database().url))
    token = (await login(harness.client, "sup@botcriptofy.example")).json()["access_token"]
    enrolled = (await harness.client.post("/v1/auth/totp/enroll", headers=bearer(token))).json()
    assert enrolled["otpauth_uri"].startswith("otpauth://totp/BotCriptoFy")
    bad = await harness.client.post("/v1/auth/totp/verify", headers=bearer(token), json={"code": "12"})
    assert bad.status_code == 422
    code = pyotp.TOTP(enrolled["secret"]).now()
    assert (await harness.client.post("/v1/auth/totp/verify", headers=bearer(token), json={"code": code})).json() == {"totp_enabled": True}
    assert (await login(harness.client, "sup@botcriptofy.example")).status_code == 401  # now needs the code
    later = pyotp.TOTP(enrolled["secret"]).at(time.time() + 30)
    assert (await login(harness.client, "sup@botcriptofy.example", totp_code=later)).status_code == 200


async def test_service_principals_have_their_departments_least_privilege(make_auth):
    harness = await make_auth(plugins={"guarded": Guarded()})
    admin, _ = await _admin(harness)
    minted = await harness.client.post("/v1/admin/service-principals", headers=bearer(admin), json={"department": "finance"})
    assert minted.status_code == 201, minted.text
    key = minted.json()
    assert key["department"] == "finance" and key["role"] == "member"
    assert set(key["scopes"]) >= {"finance:read", "finance:act", "billing:refund"} and "finance:*" not in key["scopes"]
    agent = {"X-API-Key": key["key"]}
    assert (await harness.client.post("/v1/test/refund", headers=agent)).status_code == 200
    assert (await harness.client.post("/v1/test/finance-approve", headers=agent)).status_code == 403
    assert (await harness.client.post("/v1/test/security-block", headers=agent)).status_code == 403
    me = (await harness.client.get("/v1/me", headers=agent)).json()
    assert me["user"]["kind"] == "service" and me["roles"] == {"finance": "member"}
    # Agents cannot mint keys or manage staff.
    assert (
        await harness.client.post("/v1/auth/api-keys", headers=agent, json={"name": "x", "scopes": ["finance:read"]})
    ).status_code == 403
    assert (await harness.client.get("/v1/admin/staff", headers=agent)).status_code == 403

    # A short-lived bearer token for the security agent (as `botcriptofy users service-token security` prints).
    token, _ = await service_token(harness.kernel, "security", "member", 300)
    assert (await harness.client.post("/v1/test/security-block", headers=bearer(token))).status_code == 200
    assert (await harness.client.post("/v1/test/refund", headers=bearer(token))).status_code == 403
    assert (await harness.client.get("/v1/me", headers=bearer(token))).json()["user"]["kind"] == "service"
    # Customers cannot mint service principals.
    trader = (await signup(harness.client, "t@example.com"))["tokens"]["access_token"]
    assert (
        await harness.client.post("/v1/admin/service-principals", headers=bearer(trader), json={"department": "finance"})
    ).status_code == 403


async def test_security_staff_block_and_log_out_users(make_auth):
    harness = await make_auth()
    admin, _ = await _admin(harness)
    for email, roles in (("secu@botcriptofy.example", {"security": "member"}), ("mkt@botcriptofy.example", {"marketing": "manager"})):
        await harness.client.post(
            "/v1/admin/staff", headers=bearer(admin), json={"email": email, "name": "Staff", "password": STRONG_PASSWORD, "roles": roles}
        )
    security = (await login(harness.client, "secu@botcriptofy.example")).json()["access_token"]
    marketing = (await login(harness.client, "mkt@botcriptofy.example")).json()["access_token"]
    victim = await signup(harness.client, "abuser@example.com", account_type="influencer")
    victim_token = victim["tokens"]["access_token"]
    await approve_influencer(harness.kernel, victim["tenant"]["id"], by="test")
    await verify(harness, "abuser@example.com")
    key = (
        await harness.client.post("/v1/auth/api-keys", headers=bearer(victim_token), json={"name": "k", "scopes": ["trading:read"]})
    ).json()
    other = (await login(harness.client, "abuser@example.com")).json()["access_token"]
    uid = victim["user"]["id"]

    assert (await harness.client.post(f"/v1/admin/users/{uid}/block", headers=bearer(marketing), json={})).status_code == 403
    assert (
        await harness.client.post(f"/v1/admin/users/{uid}/block", headers=bearer(security), json={"reason": "referral abuse"})
    ).status_code == 204
    for credential in (bearer(victim_token), bearer(other), {"X-API-Key": key["key"]}):
        assert (await harness.client.get("/v1/me", headers=credential)).status_code == 401
    assert (await login(harness.client, "abuser@example.com")).status_code == 403
    assert (await harness.client.post("/v1/auth/refresh", json={"refresh_token": victim["tokens"]["refresh_token"]})).status_code == 401
    assert (await harness.client.post(f"/v1/admin/users/{uid}/unblock", headers=bearer(security))).status_code == 204
    fresh = (await login(harness.client, "abuser@example.com")).json()["access_token"]
    assert (await harness.client.get("/v1/me", headers={"X-API-Key": key["key"]})).status_code == 200
    assert (await harness.client.post(f"/v1/admin/users/{uid}/revoke-sessions", headers=bearer(security))).json() == {"revoked": 1}
    assert (await harness.client.get("/v1/me", headers=bearer(fresh))).status_code == 401
    owner_id = (await harness.client.get("/v1/me", headers=bearer(admin))).json()["user"]["id"]
    assert (await harness.client.post(f"/v1/admin/users/{owner_id}/block", headers=bearer(security), json={})).status_code == 403
    assert (await harness.client.post("/v1/admin/users/not-an-id/block", headers=bearer(security), json={})).status_code == 404
