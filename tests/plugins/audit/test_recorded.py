"""Recorded from day one: what auth, billing, the kernel and lgpd do lands in the trail; who may read and verify it."""

from __future__ import annotations

import asyncio
import json

from botcriptofy.testing import wait_until
from botcriptofy_audit._service import verify_export
from botcriptofy_audit._state import state_of
from botcriptofy_auth._accounts import mark_email_verified
from botcriptofy_billing._service import assign
from support import STRONG_PASSWORD, signup, staff

from .conftest import PLUGINS, audit_settings, full_settings


async def _actions(client, headers, **params) -> list[str]:
    response = await client.get("/v1/audit", params={"limit": 1000, **params}, headers=headers)
    assert response.status_code == 200, response.text
    return [entry["action"] for entry in response.json()["entries"]]


async def test_existing_plugins_record_their_actions(database_url, kernel_harness):
    base = full_settings(database_url, auth={"lockout_threshold": 2}, billing={"webhook_secret": "whsec_test"})
    harness = await kernel_harness(plugins=PLUGINS, settings=base)
    client, kernel = harness.client, harness.kernel
    ana = await signup(client, "ana@example.com")
    tenant = ana["tenant"]["id"]
    assert (await client.post("/v1/auth/login", json={"email": "ana@example.com", "password": STRONG_PASSWORD})).status_code == 200
    for _ in range(2):
        await client.post("/v1/auth/login", json={"email": "ana@example.com", "password": "wrong password number one"})
    changed = await client.post(
        "/v1/auth/password", json={"current_password": STRONG_PASSWORD, "new_password": "another strong passphrase"}, headers=ana["headers"]
    )
    assert changed.status_code == 200, changed.text
    await assign(kernel, tenant, "pro")
    await mark_email_verified(kernel, email="ana@example.com", by="test")  # keys need a verified address (tests/plugins/auth)
    key = await client.post("/v1/auth/api-keys", json={"name": "bot", "scopes": ["trading:read"]}, headers=ana["headers"])
    assert key.status_code == 201, key.text
    assert (await client.delete(f"/v1/auth/api-keys/{key.json()['id']}", headers=ana["headers"])).status_code == 204
    refused = await client.post("/v1/billing/webhook", content=b"{}", headers={"stripe-signature": "t=1,v1=00"})
    assert refused.status_code == 400
    # Configuration applied, a plugin switched off and on again, and a rollback.
    assert (await harness.apply({**base, "plugins": {"disabled": ["cache"]}, "audit": {"page_size": 50}})).applied
    assert (await harness.apply({**base, "audit": {"page_size": 60}})).applied
    version = harness.kernel.config_version
    assert (await harness.runtime.rollback(version - 1)).applied

    expected_tenant = {
        "auth.signup",
        "auth.login",
        "auth.login_throttled",
        "auth.password_changed",
        "auth.api_key_created",
        "auth.api_key_revoked",
        "billing.subscription_changed",
    }

    async def recorded() -> bool:
        return expected_tenant <= set(await _actions(client, ana["headers"]))

    await wait_until(recorded, timeout=10)
    entries = (await client.get("/v1/audit", params={"limit": 1000}, headers=ana["headers"])).json()["entries"]
    assert {e["tenant_id"] for e in entries} == {tenant}
    logins = [e for e in entries if e["action"] == "auth.login"]
    assert {e["outcome"] for e in logins} == {"success", "failure"}
    assert "ana@example.com" not in json.dumps(entries)  # pseudonymous ids only
    assert all(e["subject"] == ana["user"]["id"] for e in logins)

    auditor = await staff(harness, "auditor@botcriptofy.example", {"audit": "member"})

    async def platform() -> bool:
        found = await _actions(client, auditor, chain="platform")
        wanted = {"config.applied", "config.rolled_back", "plugin.disabled", "plugin.enabled", "billing.webhook_refused"}
        return wanted <= set(found) and found.count("plugin.disabled") == 2

    await wait_until(platform, timeout=10)
    disabled = (await client.get("/v1/audit", params={"action": "plugin.disabled"}, headers=auditor)).json()["entries"]
    assert [e["target"] for e in disabled] == ["plugin:cache", "plugin:cache"]  # disabled, then again by the rollback
    # The audit department reads everything, page by page.
    first = (await client.get("/v1/audit", params={"limit": 3}, headers=auditor)).json()
    second = (await client.get("/v1/audit", params={"limit": 3, "before": first["next"]}, headers=auditor)).json()
    assert len(first["entries"]) == 3 and first["entries"][-1]["id"] > second["entries"][0]["id"]
    # Bad input is a 422 naming the field, never a database error.
    for params, field in (({"action": "a\x00b"}, "action"), ({"before": 10**30}, "before"), ({"since": "yesterday"}, "since")):
        bad = await client.get("/v1/audit", params=params, headers=auditor)
        assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == field, bad.text
    # A trader cannot look at other chains, nor verify.
    assert (await client.get("/v1/audit", params={"chain": "platform"}, headers=ana["headers"])).status_code == 403
    assert (await client.get("/v1/admin/audit/verify", headers=ana["headers"])).status_code == 403
    verified = await client.get("/v1/admin/audit/verify", headers=auditor)
    assert verified.status_code == 200 and verified.json()["valid"], verified.text
    only = (await client.get("/v1/admin/audit/verify", params={"tenant": tenant}, headers=auditor)).json()
    assert [c["chain"] for c in only["chains"]] == [tenant]


async def test_signed_export_of_a_range(database_url, kernel_harness):
    harness = await kernel_harness(plugins=PLUGINS, settings=full_settings(database_url))
    client, kernel = harness.client, harness.kernel
    await signup(client, "ana@example.com")
    for number in range(5):
        await kernel.audit("test.exported", tenant_id="t-export", details={"n": number})
    owner = await staff(harness, "auditor@botcriptofy.example", {"audit": "manager"})
    exported = await client.get("/v1/admin/audit/export", params={"chain": "t-export"}, headers=owner)
    assert exported.status_code == 200 and exported.headers["content-type"].startswith("application/jsonl")
    lines = exported.text.splitlines()
    assert len(lines) == 6 and json.loads(lines[-1])["count"] == 5
    keyring = state_of(kernel).keyring
    assert verify_export(exported.text, keyring)
    assert not verify_export(exported.text.replace('"n":3', '"n":4'), keyring)
    assert not verify_export("".join(line + "\n" for line in lines[1:]), keyring)
    member = await staff(harness, "viewer@botcriptofy.example", {"audit": "viewer"})
    assert (await client.get("/v1/admin/audit/export", headers=member)).status_code == 403


class Toggled:
    """A plugin the test switches off: a change to apply."""


async def test_a_change_every_worker_of_a_host_applies_is_in_the_trail_once(database_url, kernel_harness, tmp_path):
    """Each worker publishes ConfigApplied for the version it applied: one entry per version and host, not per worker."""
    import sqlalchemy as sa

    from botcriptofy_audit._models import entries

    plugins = {**{name: PLUGINS[name] for name in ("storage", "audit")}, "toggled": Toggled()}
    base = {**audit_settings(database_url), "kernel": {"state_dir": str(tmp_path / "one-host")}}
    workers = [await kernel_harness(plugins=plugins, settings=base) for _ in range(2)]
    change = {**base, "plugins": {"disabled": ["toggled"]}}
    versions = {(await worker.apply(change)).version for worker in workers}
    assert len(versions) == 1  # the host's configuration history numbers it once
    [version] = versions

    async def recorded() -> list[str]:
        async with workers[0].kernel.database().session(system=True) as session:
            rows = await session.execute(sa.select(entries.c.action).where(entries.c.target.in_([f"config:{version}", "plugin:toggled"])))
            return [row[0] for row in rows]

    await wait_until(lambda: _has(recorded, "plugin.disabled"), timeout=10)
    await asyncio.sleep(0.5)  # the relay had its chance to deliver the second worker's event too
    assert sorted(await recorded()) == ["config.applied", "plugin.disabled"]


async def _has(read, action: str) -> bool:
    return action in await read()
