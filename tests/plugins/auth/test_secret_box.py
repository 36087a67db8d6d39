"""The kernel's secret box, provided by auth: a plugin seals per-tenant secrets, keys rotate, every plugin re-encrypts."""

from __future__ import annotations

import tomllib

import pytest
from click.testing import CliRunner

import botcriptofy_auth
from botcriptofy import Actor, Envelope, Event, EventHandler, acting_actor, hookimpl
from botcriptofy._cli import cli
from botcriptofy.testing import render_settings, wait_until
from botcriptofy_auth._fields import new_key_entry

from .conftest import FAST_HASH, auth_settings, bearer, signup


class Vault:
    """A third-party plugin storing one exchange API secret per tenant, sealed by the kernel's secret box."""

    def __init__(self) -> None:
        self.stored: dict[str, str] = {}

    @staticmethod
    def context(tenant_id: str) -> str:
        return f"vault.exchange_keys.secret:{tenant_id}"

    async def put(self, kernel, tenant_id: str, secret: str) -> None:
        self.stored[tenant_id] = kernel.secret_box().seal(secret, context=self.context(tenant_id))

    async def get(self, kernel, tenant_id: str) -> str:
        return kernel.secret_box().open(self.stored[tenant_id], context=self.context(tenant_id))

    @hookimpl
    def reencrypt_secrets(self, kernel, box):
        changed = 0
        for tenant_id, sealed in self.stored.items():
            if box.needs_reseal(sealed):
                self.stored[tenant_id] = box.seal(box.open(sealed, context=self.context(tenant_id)), context=self.context(tenant_id))
                changed += 1
        return changed


async def test_a_plugin_seals_per_tenant_secrets_and_they_survive_a_key_rotation(make_auth):
    vault = Vault()
    k1, k2 = new_key_entry("k1"), new_key_entry("k2")
    harness = await make_auth(plugins={"vault": vault}, field_encryption_keys=[k1])
    await vault.put(harness.kernel, "tenant-a", "binance-secret-a")
    await vault.put(harness.kernel, "tenant-b", "binance-secret-b")
    assert vault.stored["tenant-a"].startswith("v1.k1.") and "binance" not in vault.stored["tenant-a"]
    assert await vault.get(harness.kernel, "tenant-a") == "binance-secret-a"
    # A sealed value copied to another tenant's row does not open.
    with pytest.raises(ValueError, match="another record"):
        harness.kernel.secret_box().open(vault.stored["tenant-a"], context=Vault.context("tenant-b"))

    # Auth seals its own fields (phone, tax id, TOTP secrets) with the same box and re-encrypts them too.
    token = (await signup(harness.client, "ana@example.com"))["tokens"]["access_token"]
    assert (await harness.client.patch("/v1/me", headers=bearer(token), json={"phone": "+55 11 99999-0000"})).status_code == 200

    url = harness.kernel.database().url
    assert (await harness.apply(auth_settings(url, field_encryption_keys=[k2, k1]))).applied
    box = harness.kernel.secret_box()
    assert box.key_id == "k2" and box.needs_reseal(vault.stored["tenant-a"])
    assert await vault.get(harness.kernel, "tenant-a") == "binance-secret-a"  # the old key still opens
    assert await harness.kernel.reencrypt_secrets() == {"vault": 2, "auth": 1}
    assert all(sealed.startswith("v1.k2.") for sealed in vault.stored.values())
    assert await harness.kernel.reencrypt_secrets() == {"vault": 0, "auth": 0}

    assert (await harness.apply(auth_settings(url, field_encryption_keys=[k2]))).applied  # the old key removed
    assert await vault.get(harness.kernel, "tenant-b") == "binance-secret-b"
    me = (await harness.client.get("/v1/me", headers=bearer(token))).json()
    assert me["user"]["phone"] == "+55 11 99999-0000"


def test_secrets_rotate_and_reencrypt_from_the_command_line(tmp_path):
    settings_dir = tmp_path / "settings"
    settings_dir.mkdir()
    first = new_key_entry("first")
    (settings_dir / "settings.toml").write_text(
        render_settings({"storage": {"url": f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"}, "auth": FAST_HASH}, state_dir=tmp_path / "state")
    )
    (settings_dir / ".secrets.toml").write_text(f'[default.auth]\nfield_encryption_keys = ["{first}"]\n')
    botcriptofy_auth.register_commands(cli=cli)
    runner = CliRunner()
    base = ["--settings", str(settings_dir), "--env", "testing"]
    rotated = runner.invoke(cli, [*base, "secrets", "rotate", "--key-id", "second"])
    assert rotated.exit_code == 0, rotated.output
    keys = tomllib.loads((settings_dir / ".secrets.toml").read_text())["default"]["auth"]["field_encryption_keys"]
    assert [k.partition(":")[0] for k in keys] == ["second", "first"] and keys[1] == first
    assert (settings_dir / ".secrets.toml").stat().st_mode & 0o077 == 0
    again = runner.invoke(cli, [*base, "secrets", "rotate", "--key-id", "first"])
    assert again.exit_code != 0 and "already configured" in again.output
    done = runner.invoke(cli, [*base, "secrets", "reencrypt"])
    assert done.exit_code == 0, done.output
    assert "auth: re-encrypted 0 value(s)" in done.output and "under key 'second'" in done.output


class Echo(Event):
    event_type = "auth_test.echo"

    text: str


class Worker:
    """A plugin whose event handler checks a permission as its service principal."""

    def __init__(self) -> None:
        self.seen: list[tuple[Actor | None, bool]] = []

    @hookimpl
    def register_event_handlers(self, kernel):
        def handle(envelope: Envelope) -> None:
            actor = acting_actor()
            self.seen.append((actor, actor is not None and actor.can("finance:act")))

        return [EventHandler("worker.echo", handle, events=(Echo,))]


async def test_event_handlers_run_as_the_mapped_department_service_principal(make_auth):
    worker = Worker()
    harness = await make_auth(plugins={"worker": worker}, service_principals={"worker": "finance:member"})
    await harness.kernel.events.publish(Echo(text="hi"))
    await wait_until(lambda: worker.seen)
    actor, allowed = worker.seen[0]
    assert actor is not None and actor.kind == "service" and allowed
    assert actor.attributes["principal"]["name"] == "agent-finance-member"
    # Unmapped: the handler runs with an actor that holds nothing.
    url = harness.kernel.database().url
    assert (await harness.apply(auth_settings(url))).applied
    await harness.kernel.events.publish(Echo(text="again"))
    await wait_until(lambda: len(worker.seen) == 2)
    actor, allowed = worker.seen[1]
    assert actor is not None and actor.id == "service:worker" and not allowed
