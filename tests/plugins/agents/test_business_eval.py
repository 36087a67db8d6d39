"""``botcriptofy agents eval`` on the finance and subscriptions agents' shipped cases (no database: contexts are supplied)."""

from __future__ import annotations

import json
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from click.testing import CliRunner

import botcriptofy_agents
from botcriptofy._cli import cli
from botcriptofy.testing import render_settings
from botcriptofy_agent_finance import CASES as FINANCE_CASES
from botcriptofy_agent_subscriptions import CASES as SUBSCRIPTIONS_CASES

pytestmark = [pytest.mark.timeout(90), pytest.mark.usefixtures("settled_plugins")]  # they list the installed plugins

KEEP = {"agents", "agent_finance", "agent_subscriptions"}


def test_the_rules_pass_every_shipped_case_and_a_wrong_one_fails(tmp_path: Path):
    settings_dir = tmp_path / "settings"
    settings_dir.mkdir()
    others = sorted({ep.name for ep in entry_points(group="botcriptofy")} - KEEP)
    settings = {"plugins": {"disabled": others}, "agent_finance": {"check_interval": 3600}, "agent_subscriptions": {"check_interval": 3600}}
    (settings_dir / "settings.toml").write_text(render_settings(settings, state_dir=tmp_path / "state"))
    botcriptofy_agents.register_commands(cli=cli)

    def run(*args: str):
        return CliRunner().invoke(cli, ["--settings", str(settings_dir), "--env", "testing", "agents", "eval", *args])

    for name, cases in (("agent_finance", FINANCE_CASES), ("subscriptions", SUBSCRIPTIONS_CASES)):
        result = run(name, str(cases), "--json", "--min-accuracy", "1", "--min-schema-valid", "1", "--max-fallbacks", "0")
        assert result.exit_code == 0, result.output
        (report,) = json.loads(result.stdout)["reports"]
        assert report["cases"] >= 30 and report["accuracy"] == 1.0
    wrong = json.loads(FINANCE_CASES.read_text().splitlines()[0])
    wrong["expected_action"] = "pause_dunning"
    (tmp_path / "wrong.jsonl").write_text(json.dumps(wrong) + "\n")
    assert run("agent_finance", str(tmp_path / "wrong.jsonl"), "--min-accuracy", "1").exit_code == 1
