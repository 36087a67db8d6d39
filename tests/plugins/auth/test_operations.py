"""Operating the plugin: the CLI, live settings, key rotation, production secrets, privacy hooks."""

from __future__ import annotations

import re
from pathlib import Path

import pyotp
import sqlalchemy as sa
from click.testing import CliRunner

import botcriptofy_auth
import botcriptofy_storage
from botcriptofy import DataSubject
from botcriptofy._cli import cli
from botcriptofy.testing import render_settings
from botcriptofy_auth._accounts import rotate_field_keys
from botcriptofy_auth._fields import new_key_entry
from botcriptofy_auth._keys import generate_private_key, private_pem
from botcriptofy_auth._models import User

from .conftest import FAST_HASH, STRONG_PASSWORD, auth_settings, bearer, login, signup


def test_create_admin_from_the_command_line(tmp_path: Path, monkeypatch):
    """`botcriptofy users create-admin` bootstraps the owner; the printed TOTP secret logs them in."""
    database = tmp_path / "cli.db"
    settings_dir = tmp_path / "settings"
    settings_dir.mkdir()
    (settings_dir / "settings.toml").write_text(
        render_settings({"storage": {"url": f"sqlite+aiosqlite:///{database}"}, "auth": FAST_HASH}, state_dir=tmp_path / "state")
    )
    botcriptofy_auth.register_commands(cli=cli)
    runner = CliRunner()
    args = [
        "--settings",
        str(settings_dir),
        "--env",
        "testing",
        "users",
        "create-admin",
        "--email",
        "Owner@BotCriptoFy.example",
        "--name",
        "Owner",
        "--password-stdin",
    ]
    result = runner.invoke(cli, args, input=f"{STRONG_PASSWORD}\n", catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "super-admin owner@botcriptofy.example created" in result.output
    secret = re.search(r"secret: ([A-Z2-7]+)", result.output).group(1)
    assert "otpauth://totp/" in result.output
    again = runner.invoke(cli, args, input=f"{STRONG_PASSWORD}\n")
    assert again.exit_code != 0 and "already exists" in again.output
    weak = runner.invoke(cli, [*args[:-1], "--another", "--password-stdin"], input="short\n")
    assert weak.exit_code != 0 and "at least 12 characters" in weak.output

    minted = runner.invoke(cli, ["--settings", str(settings_dir), "--env", "testing", "users", "service-key", "finance"])
    assert minted.exit_code == 0, minted.output
    assert re.search(r"X-API-Key \(shown once\): bcf_[0-9a-f]{12}_", minted.output)
    assert "billing:refund" in minted.output
    # Support marks an address verified by hand (audited); an unknown address is an error.
    base = ["--settings", str(settings_dir), "--env", "testing", "users", "verify-email", "--email"]
    verified = runner.invoke(cli, [*base, "OWNER@botcriptofy.example"])
    assert verified.exit_code == 0 and "owner@botcriptofy.example verified" in verified.output, verified.output
    unknown = runner.invoke(cli, [*base, "nobody@botcriptofy.example"])
    assert unknown.exit_code != 0 and "no account has the e-mail nobody@botcriptofy.example" in unknown.output

    import asyncio

    async def check() -> None:
        from botcriptofy import Runtime

        runtime = Runtime(
            settings_dir, env="testing", plugins={"storage": botcriptofy_storage, "auth": botcriptofy_auth}, discover=False, watch=False
        )
        await runtime.start()
        try:
            import httpx

            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=runtime), base_url="http://testserver") as client:
                response = await login(client, "owner@botcriptofy.example", totp_code=pyotp.TOTP(secret).now())
                assert response.status_code == 200, response.text
                me = (await client.get("/v1/me", headers=bearer(response.json()["access_token"]))).json()
                assert me["user"]["email_verified"] is True
        finally:
            await runtime.stop()

    asyncio.run(check())


async def test_live_settings_apply_without_restart(make_auth):
    harness = await make_auth()
    await signup(harness.client, "live@example.com")
    result = await harness.apply(auth_settings(harness.kernel.database().url, allow_signup=False, pw_min_length=20))
    assert result.applied and result.changes["reconfigured"] == ["auth"] and not result.changes["restarted"]
    closed = await harness.client.post(
        "/v1/auth/signup", json={"email": "late@example.com", "password": STRONG_PASSWORD, "name": "Late", "account_type": "trader"}
    )
    assert closed.status_code == 403
    # Existing sessions survive a live change.
    assert (await login(harness.client, "live@example.com")).status_code == 200
    refused = await harness.apply(auth_settings(harness.kernel.database().url, access_ttl=5))
    assert not refused.applied and "auth.access_ttl" in refused.error


async def test_signing_key_rotation_keeps_sessions(make_auth):
    old_key, new_key = private_pem(generate_private_key("EdDSA")), private_pem(generate_private_key("ES256"))
    harness = await make_auth(signing_key=old_key)
    tokens = (await signup(harness.client, "rotate@example.com"))["tokens"]
    result = await harness.apply(auth_settings(harness.kernel.database().url, signing_key=new_key, retired_signing_keys=[old_key]))
    assert result.applied and result.changes["restarted"] == ["auth"], result
    assert (await harness.client.get("/v1/me", headers=bearer(tokens["access_token"]))).status_code == 200
    fresh = (await harness.client.post("/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})).json()
    assert fresh["access_token"].split(".")[0] != tokens["access_token"].split(".")[0]  # signed by the new key (ES256 header)
    keys = (await harness.client.get("/.well-known/jwks.json")).json()["keys"]
    assert {k["alg"] for k in keys} == {"EdDSA", "ES256"}
    # Retiring the old key entirely ends its tokens.
    await harness.apply(auth_settings(harness.kernel.database().url, signing_key=new_key))
    assert (await harness.client.get("/v1/me", headers=bearer(tokens["access_token"]))).status_code == 401
    assert (await harness.client.get("/v1/me", headers=bearer(fresh["access_token"]))).status_code == 200


async def test_field_key_rotation_reencrypts(make_auth):
    k1, k2 = new_key_entry("k1"), new_key_entry("k2")
    harness = await make_auth(field_encryption_keys=[k1])
    body = await signup(harness.client, "fields@example.com")
    headers = bearer(body["tokens"]["access_token"])
    await harness.client.patch("/v1/me", headers=headers, json={"phone": "+55 21 99876-5432"})
    await harness.apply(auth_settings(harness.kernel.database().url, field_encryption_keys=[k2, k1]))
    assert (await harness.client.get("/v1/me", headers=headers)).json()["user"]["phone"] == "+55 21 99876-5432"
    assert await rotate_field_keys(harness.kernel) == 1
    async with harness.kernel.database().session(system=True) as session:
        stored = (await session.get(User, body["user"]["id"])).phone
    assert stored.startswith("v1.k2.")
    await harness.apply(auth_settings(harness.kernel.database().url, field_encryption_keys=[k2]))
    assert (await harness.client.get("/v1/me", headers=headers)).json()["user"]["phone"] == "+55 21 99876-5432"


async def test_production_refuses_development_secrets(kernel_harness, tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path / 'prod.db'}"
    harness = await kernel_harness(
        plugins={"storage": botcriptofy_storage, "auth": botcriptofy_auth},
        settings={"storage": {"url": url}, "auth": FAST_HASH},
        env="production",
    )
    info = harness.runtime.plugins["auth"]
    assert info.error and "auth.signing_key is empty" in info.error and "BOTCRIPTOFY_AUTH__SIGNING_KEY" in info.error
    assert "auth" not in harness.kernel.plugins


async def test_privacy_export_and_erasure(make_auth):
    harness = await make_auth()
    body = await signup(harness.client, "lgpd@example.com", name="Lia")
    headers = bearer(body["tokens"]["access_token"])
    await harness.client.patch("/v1/me", headers=headers, json={"tax_id": "123.456.789-09"})
    subject = DataSubject(user_id=body["user"]["id"], tenant_id=body["tenant"]["id"], email="lgpd@example.com")
    exported = (await harness.kernel.broadcast("export_subject_data", kernel=harness.kernel, subject=subject))["auth"]
    assert exported["user"]["email"] == "lgpd@example.com" and exported["user"]["tax_id"] == "123.456.789-09"
    assert exported["sessions"] and "argon2" not in str(exported) and "password_hash" not in str(exported)
    (sent,) = exported["account_emails"]  # the sign-up's verification link: kind and address, never the token
    assert sent["purpose"] == "verify_email" and sent["sent_to"] == "lgpd@example.com" and sent["used_at"] is None
    assert harness.mailbox.notifications[0].params["token"] not in str(exported)
    report = (await harness.kernel.broadcast("erase_subject_data", kernel=harness.kernel, subject=subject))["auth"]
    assert "email" in report["erased"]
    assert (await harness.client.get("/v1/me", headers=headers)).status_code == 401
    assert (await login(harness.client, "lgpd@example.com")).status_code == 401
    async with harness.kernel.database().session(system=True) as session:
        user = await session.get(User, body["user"]["id"])
        assert user.email is None and user.tax_id is None and user.password_hash is None and user.status == "disabled"
        assert (await session.execute(sa.text("SELECT count(*) FROM auth_login_ips"))).scalar_one() == 0
        assert (await session.execute(sa.text("SELECT count(*) FROM auth_account_tokens"))).scalar_one() == 0
    # The address is free again.
    await signup(harness.client, "lgpd@example.com")


async def test_secrets_from_environment_and_secrets_file(kernel_harness, tmp_path, monkeypatch):
    """The signing key may come from BOTCRIPTOFY_AUTH__SIGNING_KEY, the pepper from settings/.secrets.toml."""
    import tomlkit

    from botcriptofy_auth._state import STATE

    pem = private_pem(generate_private_key("ES256"))
    monkeypatch.setenv("BOTCRIPTOFY_AUTH__SIGNING_KEY", pem)
    url = f"sqlite+aiosqlite:///{tmp_path / 'secrets.db'}"
    harness = await kernel_harness(
        plugins={"storage": botcriptofy_storage, "auth": botcriptofy_auth}, settings={"storage": {"url": url}, "auth": FAST_HASH}
    )
    ring = harness.kernel.stash[STATE].keyring
    assert ring.algorithm == "ES256"
    (harness.settings_dir / ".secrets.toml").write_text(
        tomlkit.dumps({"default": {"auth": {"api_key_pepper": "pepper-from-secrets-file"}}})
    )
    result = await harness.runtime.reload(source="test")
    assert result.applied and result.changes["restarted"] == ["auth"]
    assert harness.kernel.stash[STATE].peppers.current == b"pepper-from-secrets-file"
    from botcriptofy_auth._cli import create_admin

    made = await create_admin(harness.kernel, email="ops@botcriptofy.example", name="Ops", password=STRONG_PASSWORD)
    token = (await login(harness.client, "ops@botcriptofy.example", totp_code=pyotp.TOTP(made["totp_secret"]).now())).json()["access_token"]
    shown = (await harness.client.get("/v1/admin/config", headers=bearer(token))).json()["settings"]["auth"]
    assert shown["signing_key"] == "***" and shown["api_key_pepper"] == "***"  # masked wherever settings are shown
