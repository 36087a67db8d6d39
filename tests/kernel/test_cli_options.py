"""`--settings DIR` and `--env` work after the command as well as before it."""

from __future__ import annotations

from click.testing import CliRunner

from botcriptofy._cli import cli


def test_settings_and_env_after_the_command_work_like_before_it(tmp_path, monkeypatch):
    monkeypatch.delenv("BOTCRIPTOFY_SETTINGS_DIR", raising=False)
    monkeypatch.delenv("BOTCRIPTOFY_ENV", raising=False)
    monkeypatch.chdir(tmp_path)
    settings = tmp_path / "elsewhere"
    settings.mkdir()
    (settings / "settings.toml").write_text(
        "[default.kernel]\ntitle = 'default'\n[default.plugins]\ndisabled = []\n[production.kernel]\nmax_body_bytes = 'x'\n"
    )
    runner = CliRunner()
    before = runner.invoke(cli, ["--settings", str(settings), "config", "show"])
    after = runner.invoke(cli, ["config", "show", "--settings", str(settings)])
    assert before.exit_code == after.exit_code == 0, after.output
    assert '"title": "default"' in after.output and before.output == after.output

    # Without the option the command reads ./settings, which does not exist here.
    assert runner.invoke(cli, ["config", "check"]).exit_code != 0

    production = runner.invoke(cli, ["config", "check", "--settings", str(settings), "--env", "production"])
    assert production.exit_code == 1 and "key 'kernel.max_body_bytes'" in production.output
    assert runner.invoke(cli, ["--env", "production", "config", "check", "--settings", str(settings)]).exit_code == 1
    assert runner.invoke(cli, ["config", "check", "--settings", str(settings), "--env", "testing"]).exit_code == 0


def test_serve_and_restart_accept_the_options_after_the_command():
    runner = CliRunner()
    for command in ("serve", "restart", "plugins list", "plugins rescan", "config history", "config rollback"):
        output = runner.invoke(cli, [*command.split(), "--help"]).output
        assert "--settings DIRECTORY" in output and "--env" in output, command
