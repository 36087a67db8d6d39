"""Declared permissions: a plugin's routes work for the roles it names, the catalogue follows live changes, API and CLI list it."""

from __future__ import annotations

import json

from click.testing import CliRunner

import botcriptofy_auth
from botcriptofy import Permission, Route, hookimpl
from botcriptofy._cli import cli
from botcriptofy.testing import render_settings
from botcriptofy_auth._cli import create_admin

from .conftest import FAST_HASH, STRONG_PASSWORD, auth_settings, bearer, login, signup
from .test_staff import ADMIN


class Reports:
    """A new plugin: its route needs a permission it declares for the CEO's viewers and for traders."""

    @hookimpl
    def register_permissions(self, kernel):
        return [
            Permission("reports:export", "Export a report.", frozenset({"ceo:viewer", "trader"})),
            Permission("Bad Name", "ignored: not namespace:action", frozenset({"ceo:viewer"})),
            Permission("reports:purge", "Purge reports; grants to an unknown holder are ignored.", frozenset({"ceo:owner"})),
        ]

    @hookimpl
    def register_routes(self, kernel):
        async def export(request):
            return {"ok": True}

        return [Route("/v1/test/reports/export", export, methods=["POST"], permission="reports:export")]


async def _staff(harness, admin: str, email: str, roles: dict[str, str]) -> str:
    response = await harness.client.post(
        "/v1/admin/staff", headers=bearer(admin), json={"email": email, "name": "Staff", "password": STRONG_PASSWORD, "roles": roles}
    )
    assert response.status_code == 201, response.text
    return (await login(harness.client, email)).json()["access_token"]


async def _admin(harness) -> str:
    from botcriptofy_auth import _totp

    made = await create_admin(harness.kernel, email=ADMIN, name="Owner", password=STRONG_PASSWORD)
    return (await login(harness.client, ADMIN, totp_code=_totp.code_for(made["totp_secret"]))).json()["access_token"]


async def test_a_declared_permission_works_for_its_roles_without_extra_grants(make_auth):
    harness = await make_auth(plugins={"reports": Reports()})
    admin = await _admin(harness)
    ceo_viewer = await _staff(harness, admin, "ceo@botcriptofy.example", {"ceo": "viewer"})
    ceo_manager = await _staff(harness, admin, "boss@botcriptofy.example", {"ceo": "manager"})  # a grant covers higher roles
    finance = await _staff(harness, admin, "fin@botcriptofy.example", {"finance": "manager"})
    trader = (await signup(harness.client, "t@example.com"))["tokens"]["access_token"]
    for token, status in ((ceo_viewer, 200), (ceo_manager, 200), (trader, 200), (finance, 403)):
        assert (await harness.client.post("/v1/test/reports/export", headers=bearer(token))).status_code == status
    assert harness.kernel.settings_for("auth").extra_grants == {}


async def test_the_catalogue_follows_plugins_enabled_and_disabled_live(make_auth):
    harness = await make_auth(plugins={"reports": Reports()})
    admin = await _admin(harness)
    ceo = await _staff(harness, admin, "ceo@botcriptofy.example", {"ceo": "viewer"})
    assert (await harness.client.post("/v1/test/reports/export", headers=bearer(ceo))).status_code == 200
    assert "reports:export" in (await harness.client.get("/v1/me", headers=bearer(ceo))).json()["permissions"]

    url = harness.kernel.database().url
    result = await harness.apply({**auth_settings(url), "plugins": {"disabled": ["reports"]}})
    assert result.applied, result.error
    # The cached caller was invalidated: the permission is gone with the plugin that declared it.
    assert "reports:export" not in (await harness.client.get("/v1/me", headers=bearer(ceo))).json()["permissions"]
    result = await harness.apply(auth_settings(url))
    assert result.applied, result.error
    assert "reports:export" in (await harness.client.get("/v1/me", headers=bearer(ceo))).json()["permissions"]


async def test_the_catalogue_is_listed_by_the_api_for_configuration_and_security(make_auth):
    harness = await make_auth(plugins={"reports": Reports()}, extra_grants={"support:member": ["reports:export", "tickets:escalate"]})
    admin = await _admin(harness)
    config_viewer = await _staff(harness, admin, "cfg@botcriptofy.example", {"configuration": "viewer"})
    security_viewer = await _staff(harness, admin, "sec@botcriptofy.example", {"security": "viewer"})
    marketing = await _staff(harness, admin, "mkt@botcriptofy.example", {"marketing": "manager"})
    assert (await harness.client.get("/v1/admin/permissions", headers=bearer(marketing))).status_code == 403
    assert (await harness.client.get("/v1/admin/permissions", headers=bearer(security_viewer))).status_code == 200
    listed = (await harness.client.get("/v1/admin/permissions", headers=bearer(config_viewer))).json()
    by_name = {entry["name"]: entry for entry in listed}
    assert by_name["reports:export"] == {
        "name": "reports:export",
        "description": "Export a report.",
        "grants": ["ceo:viewer", "support:member", "trader"],
        "plugin": "reports",
    }
    assert by_name["tickets:escalate"]["plugin"] == "settings"
    assert by_name["users:block"]["plugin"] == "auth" and by_name["users:block"]["grants"] == ["security:member"]
    assert by_name["reports:purge"]["grants"] == []  # the unknown holder was left out
    assert "Bad Name" not in by_name
    assert by_name["finance:*"]["grants"] == ["finance:manager"]


def test_the_cli_lists_the_catalogue(tmp_path):
    settings = tmp_path / "settings"
    settings.mkdir()
    (settings / "settings.toml").write_text(
        render_settings({"storage": {"url": f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"}, "auth": FAST_HASH}, state_dir=tmp_path / "state")
    )
    botcriptofy_auth.register_commands(cli=cli)
    runner = CliRunner()
    result = runner.invoke(cli, ["--settings", str(settings), "--env", "testing", "permissions", "list", "--json"])
    assert result.exit_code == 0, result.output
    listed = {entry["name"]: entry for entry in json.loads(result.output[result.output.index("[") :])}
    assert listed["permissions:read"]["grants"] == ["configuration:viewer", "security:viewer"]
    assert listed["subscriptions:manage"]["plugin"] == "billing"  # the installed billing plugin declares its own
    table = runner.invoke(cli, ["--settings", str(settings), "--env", "testing", "permissions", "list"])
    assert table.exit_code == 0 and "influencers:approve" in table.output
