"""Attacks on configuration checks: no lazy evaluation, no echo of secrets, environment or files, no 500."""

from __future__ import annotations

import pytest
from pydantic import Field, SecretStr

from botcriptofy import ConfigError, PluginSettings, SettingsSchema, hookimpl
from botcriptofy._settings import load, validate

ENV_SECRET = "env-secret-7f3a9c"
FILE_SECRET = "signing-key-b41d2e"


class SigningSettings(PluginSettings):
    signing_key: SecretStr = SecretStr("")
    rounds: int = Field(10, ge=1)


class Signing:
    @hookimpl
    def plugin_settings_schema(self):
        return SettingsSchema(SigningSettings)


@pytest.fixture
async def signing_harness(kernel_harness, monkeypatch):
    monkeypatch.setenv("BCF_ATTACK_WEBHOOK_SECRET", ENV_SECRET)
    harness = await kernel_harness(plugins={"signing": Signing()})
    (harness.settings_dir / ".secrets.toml").write_text(f"[default.signing]\nsigning_key = '{FILE_SECRET}'\n")
    assert (await harness.runtime.reload()).applied
    return harness


@pytest.mark.parametrize(
    "value",
    [
        "@format {env[BCF_ATTACK_WEBHOOK_SECRET]}",
        "@jinja {{ env.BCF_ATTACK_WEBHOOK_SECRET }}",
        "@read_file /etc/passwd",
        "@get signing.signing_key",
        "@format {this.SIGNING.signing_key}",
        "@int @format {env[BCF_ATTACK_WEBHOOK_SECRET]}",
        "@str @read_file /etc/passwd",
    ],
)
async def test_config_check_never_evaluates_lazy_formats(signing_harness, value):
    text = f"[default.kernel]\nmax_body_bytes = {value!r}\n"
    response = await signing_harness.client.post("/v1/admin/config/check", json={"files": {"settings.toml": text}})
    assert response.status_code == 200
    body = response.json()
    assert body["valid"] is False
    assert body["key"] == "kernel.max_body_bytes"
    assert "plain TOML" in body["error"]
    leaked = response.text
    assert ENV_SECRET not in leaked and FILE_SECRET not in leaked and "root:" not in leaked


async def test_config_check_refuses_dynaconf_includes(signing_harness, tmp_path):
    other = tmp_path / "elsewhere.toml"
    other.write_text(f"[default.kernel]\nmax_body_bytes = '{FILE_SECRET}'\n")
    text = f"[default]\ndynaconf_include = ['{other}']\n"
    response = await signing_harness.client.post("/v1/admin/config/check", json={"files": {"settings.toml": text}})
    assert response.json()["valid"] is False
    assert "dynaconf_include" in response.json()["error"]
    assert FILE_SECRET not in response.text


async def test_rollback_refuses_a_version_with_lazy_formats(signing_harness):
    runtime = signing_harness.runtime
    assert runtime.history is not None
    number = runtime.history.record(
        digest="x", files={"settings.toml": "[default.kernel]\ntitle = '@read_file /etc/passwd'\n"}, settings={}, source="test"
    )
    response = await signing_harness.client.post("/v1/admin/config/rollback", json={"version": number})
    assert response.status_code == 422
    assert "root:" not in response.text and "plain TOML" in response.text
    assert "@read_file" not in (signing_harness.settings_dir / "settings.toml").read_text()


@pytest.mark.parametrize("name", ["a\x00.toml", "../settings.toml", "sub/settings.toml", "sub\\settings.toml", ".secrets.toml", "x.txt"])
async def test_bad_file_names_are_422_not_500(kernel_client, name):
    response = await kernel_client.post("/v1/admin/config/check", json={"files": {name: "[default]\n"}})
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["errors"][0]["field"].startswith("files.")


def test_a_secret_field_value_is_never_echoed(tmp_path):
    (tmp_path / "settings.toml").write_text("[default.signing]\nrounds = 3\n")
    (tmp_path / ".secrets.toml").write_text(f"[default.signing]\nsigning_key = ['{FILE_SECRET}']\n")
    raw = load(tmp_path, "testing")
    with pytest.raises(ConfigError) as caught:
        validate(raw, {"signing": SettingsSchema(SigningSettings)}, installed={"signing"}, enabled={"signing"})
    assert caught.value.key == "signing.signing_key"
    assert FILE_SECRET not in str(caught.value)
    assert "not shown" in str(caught.value)


def test_a_value_from_the_environment_is_never_echoed(tmp_path, monkeypatch):
    (tmp_path / "settings.toml").write_text("[default.kernel]\ntitle = 'x'\n")
    monkeypatch.setenv("BOTCRIPTOFY_KERNEL__MAX_BODY_BYTES", ENV_SECRET)
    raw = load(tmp_path, "testing")
    with pytest.raises(ConfigError) as caught:
        validate(raw, {}, installed=set(), enabled=set())
    assert caught.value.file == "environment variable BOTCRIPTOFY_KERNEL__MAX_BODY_BYTES"
    assert ENV_SECRET not in str(caught.value)


def test_a_plain_file_value_is_still_shown_to_help_the_operator(tmp_path):
    (tmp_path / "settings.toml").write_text("[default.kernel]\nmax_body_bytes = 'lots'\n")
    with pytest.raises(ConfigError, match="got 'lots'"):
        validate(load(tmp_path, "testing"), {}, installed=set(), enabled=set())


@pytest.mark.parametrize("value", ["@format {env[HOME]}", "@read_file /etc/hostname", "@int 5", "@json [1]"])
def test_lazy_formats_in_files_are_refused_by_default(tmp_path, value):
    (tmp_path / "settings.toml").write_text(f"[default.kernel]\ntitle = {value!r}\n")
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, "testing")
    assert caught.value.file == str(tmp_path / "settings.toml")
    assert caught.value.key == "kernel.title"
    assert "lazy_formats" in str(caught.value)


def test_lazy_formats_in_the_environment_are_refused_by_default(tmp_path, monkeypatch):
    (tmp_path / "settings.toml").write_text("[default.kernel]\ntitle = 'x'\n")
    monkeypatch.setenv("BOTCRIPTOFY_KERNEL__TITLE", "@read_file /etc/passwd")
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, "testing")
    assert caught.value.file == "environment variable BOTCRIPTOFY_KERNEL__TITLE"
    assert "root:" not in str(caught.value)


def test_the_operator_may_let_files_on_disk_use_lazy_formats(tmp_path, monkeypatch):
    monkeypatch.setenv("BCF_ATTACK_WEBHOOK_SECRET", ENV_SECRET)
    lazy = "'@format {env[BCF_ATTACK_WEBHOOK_SECRET]}'"
    (tmp_path / "settings.toml").write_text(f"[default.kernel]\nlazy_formats = true\ntitle = {lazy}\nmax_body_bytes = {lazy}\n")
    raw = load(tmp_path, "testing")
    assert raw.data["kernel"]["title"] == ENV_SECRET
    with pytest.raises(ConfigError) as caught:
        validate(raw, {}, installed=set(), enabled=set())
    assert ENV_SECRET not in str(caught.value)  # with lazy formats on, no value is echoed: it may come from anywhere


async def test_with_lazy_formats_on_settings_over_the_api_are_still_plain(kernel_harness, monkeypatch):
    monkeypatch.setenv("BCF_ATTACK_WEBHOOK_SECRET", ENV_SECRET)
    harness = await kernel_harness(settings={"kernel": {"lazy_formats": True}})
    text = "[default.kernel]\nlazy_formats = true\nmax_body_bytes = '@format {env[BCF_ATTACK_WEBHOOK_SECRET]}'\n"
    response = await harness.client.post("/v1/admin/config/check", json={"files": {"settings.toml": text}})
    assert response.json()["valid"] is False
    assert ENV_SECRET not in response.text
