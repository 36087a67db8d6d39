"""`botcriptofy config apply FILE…` and `POST /v1/admin/config/apply` in single-host mode: validated once, then written."""

from __future__ import annotations

from click.testing import CliRunner

from botcriptofy._cli import cli
from botcriptofy._manager import discover


def test_cli_config_apply_validates_then_writes(tmp_path, monkeypatch):
    monkeypatch.delenv("BOTCRIPTOFY_SETTINGS_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    settings = tmp_path / "settings"
    settings.mkdir()
    listed = ", ".join(f'"{name}"' for name in sorted(discover()))  # single-host mode: no plugin provides a config store
    header = f"[default.plugins]\ndisabled = [{listed}]\n[default.kernel]\nstate_dir = '{tmp_path / 'state'}'\n"
    (settings / "settings.toml").write_text(header + "title = 'one'\n")
    candidate = tmp_path / "new" / "settings.toml"
    candidate.parent.mkdir()
    runner = CliRunner()

    candidate.write_text(header + "titel = 'typo'\n")
    refused = runner.invoke(cli, ["--settings", str(settings), "config", "apply", str(candidate)])
    assert refused.exit_code == 1 and "configuration refused" in refused.output and "kernel.titel" in refused.output
    assert "title = 'one'" in (settings / "settings.toml").read_text()

    candidate.write_text(header + "title = 'two'\n")
    done = runner.invoke(cli, ["--settings", str(settings), "config", "apply", str(candidate)])
    assert done.exit_code == 0, done.output
    assert "running workers apply it within a second" in done.output
    assert (settings / "settings.toml").read_text() == candidate.read_text()

    local = tmp_path / "other" / "notes.toml"
    local.parent.mkdir()
    local.write_text("")
    wrong = runner.invoke(cli, ["--settings", str(settings), "config", "apply", str(local)])
    assert wrong.exit_code == 1 and "notes.toml" in wrong.output
    assert not (settings / "notes.toml").exists()
