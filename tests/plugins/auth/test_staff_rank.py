"""Staff actions respect rank; destructive actions on staff go through an approval (issue: a security member logged out the super-admin)."""

from __future__ import annotations

import pytest

from botcriptofy import Actor, ProblemError
from botcriptofy.testing import MemoryApprovals

from .conftest import STRONG_PASSWORD, auth_settings, bearer, login, signup
from .test_permissions import _admin, _staff


async def test_a_security_member_cannot_touch_higher_ranked_staff_or_the_super_admin(make_auth):
    approvals = MemoryApprovals()
    harness = await make_auth(plugins={"approvals": approvals})
    admin = await _admin(harness)
    security = await _staff(harness, admin, "secu@botcriptofy.example", {"security": "member"})
    config_manager = await _staff(harness, admin, "cfg@botcriptofy.example", {"configuration": "manager"})
    owner_id = (await harness.client.get("/v1/me", headers=bearer(admin))).json()["user"]["id"]
    config_id = (await harness.client.get("/v1/me", headers=bearer(config_manager))).json()["user"]["id"]

    for path in (f"/v1/admin/users/{owner_id}/revoke-sessions", f"/v1/admin/users/{config_id}/revoke-sessions"):
        refused = await harness.client.post(path, headers=bearer(security))
        assert refused.status_code == 403 and refused.json()["type"].endswith("/insufficient-rank"), refused.text
    for target in (owner_id, config_id):
        refused = await harness.client.post(f"/v1/admin/users/{target}/block", headers=bearer(security), json={"reason": "x"})
        assert refused.status_code == 403
    assert not approvals.requests  # nothing was even asked
    # Their sessions are untouched.
    assert (await harness.client.get("/v1/me", headers=bearer(admin))).status_code == 200
    assert (await harness.client.get("/v1/me", headers=bearer(config_manager))).status_code == 200
    # Nor can a staff manager grant roles above their own, or re-rank a higher-ranked colleague.
    staff_manager = await _staff(harness, admin, "hr@botcriptofy.example", {"security": "manager"})
    await harness.apply(auth_settings(harness.kernel.database().url, extra_grants={"security:manager": ["staff:manage"]}))
    escalate = await harness.client.post(
        "/v1/admin/staff",
        headers=bearer(staff_manager),
        json={"email": "new@botcriptofy.example", "name": "N", "password": STRONG_PASSWORD, "roles": {"finance": "manager"}},
    )
    assert escalate.status_code == 403 and escalate.json()["type"].endswith("/insufficient-rank")
    demote = await harness.client.put(f"/v1/admin/staff/{config_id}/roles", headers=bearer(staff_manager), json={"roles": {}})
    assert demote.status_code == 403
    key = await harness.client.post("/v1/admin/service-principals", headers=bearer(staff_manager), json={"department": "finance"})
    assert key.status_code == 403
    ok = await harness.client.post(
        "/v1/admin/service-principals", headers=bearer(staff_manager), json={"department": "security", "role": "member"}
    )
    assert ok.status_code == 201, ok.text


async def test_blocking_or_logging_out_staff_needs_an_approval(make_auth):
    approvals = MemoryApprovals()
    harness = await make_auth(plugins={"approvals": approvals})
    admin = await _admin(harness)
    manager = await _staff(harness, admin, "boss@botcriptofy.example", {"security": "manager"})
    member_token = await _staff(harness, admin, "secu@botcriptofy.example", {"security": "member"})
    member_id = (await harness.client.get("/v1/me", headers=bearer(member_token))).json()["user"]["id"]

    pending = await harness.client.post(f"/v1/admin/users/{member_id}/block", headers=bearer(manager), json={"reason": "phished"})
    assert pending.status_code == 202, pending.text
    approval_id = pending.json()["approval_id"]
    request = approvals.requests[approval_id]
    assert request.action == "auth.block_staff" and request.destructive and request.department == "security"
    assert request.permission == "users:block" and request.payload["user_id"] == member_id
    # Nothing happened yet.
    assert (await harness.client.get("/v1/me", headers=bearer(member_token))).status_code == 200
    assert (await login(harness.client, "secu@botcriptofy.example")).status_code == 200

    nobody = await harness.kernel.service_actor("unmapped")  # no permissions: cannot decide
    with pytest.raises(ProblemError):
        await harness.kernel.decide_approval(approval_id, approve=True, actor=nobody)

    owner_id = (await harness.client.get("/v1/me", headers=bearer(admin))).json()["user"]["id"]
    decided = await harness.kernel.decide_approval(approval_id, approve=True, actor=Actor(id=owner_id, kind="user", super_admin=True))
    assert decided.status == "approved" and approvals.results[approval_id] == {"done": True, "blocked": member_id}
    assert (await harness.client.get("/v1/me", headers=bearer(member_token))).status_code == 401
    assert (await login(harness.client, "secu@botcriptofy.example")).status_code == 403

    # Logging out staff everywhere works the same way; unblocking is not destructive.
    assert (await harness.client.post(f"/v1/admin/users/{member_id}/unblock", headers=bearer(manager))).status_code == 204
    fresh = (await login(harness.client, "secu@botcriptofy.example")).json()["access_token"]
    pending = await harness.client.post(f"/v1/admin/users/{member_id}/revoke-sessions", headers=bearer(manager))
    assert pending.status_code == 202
    assert (await harness.client.get("/v1/me", headers=bearer(fresh))).status_code == 200
    # The approver's rank counts too (checked when the action runs); a security manager outranks the member.
    approver_id = (await harness.client.get("/v1/me", headers=bearer(manager))).json()["user"]["id"]
    approver = Actor(id=approver_id, kind="user", permissions=frozenset({"sessions:revoke"}))
    await harness.kernel.decide_approval(pending.json()["approval_id"], approve=True, actor=approver)
    assert approvals.results[pending.json()["approval_id"]] == {"done": True, "revoked": 1}
    assert (await harness.client.get("/v1/me", headers=bearer(fresh))).status_code == 401

    # An approver of a lower rank than the target does not get the action run.
    manager_id = approver_id
    pending = await harness.client.post(f"/v1/admin/users/{manager_id}/block", headers=bearer(admin), json={})
    assert pending.status_code == 202
    low = Actor(id=member_id, kind="user", permissions=frozenset({"users:block"}))
    await harness.kernel.decide_approval(pending.json()["approval_id"], approve=True, actor=low)
    outcome = approvals.results[pending.json()["approval_id"]]
    assert outcome["done"] is False and "manager role in security" in outcome["reason"]
    assert (await harness.client.get("/v1/me", headers=bearer(manager))).status_code == 200

    # Customers are blocked at once, without an approval.
    customer = await signup(harness.client, "c@example.com")
    direct = await harness.client.post(f"/v1/admin/users/{customer['user']['id']}/block", headers=bearer(manager), json={})
    assert direct.status_code == 204


async def test_without_an_approvals_provider_staff_blocks_answer_503(make_auth):
    harness = await make_auth()
    admin = await _admin(harness)
    manager = await _staff(harness, admin, "boss@botcriptofy.example", {"security": "manager"})
    member = await _staff(harness, admin, "secu@botcriptofy.example", {"security": "member"})
    member_id = (await harness.client.get("/v1/me", headers=bearer(member))).json()["user"]["id"]
    refused = await harness.client.post(f"/v1/admin/users/{member_id}/block", headers=bearer(manager), json={})
    assert refused.status_code == 503 and refused.json()["type"].endswith("/approvals-unavailable")
    assert (await harness.client.get("/v1/me", headers=bearer(member))).status_code == 200
