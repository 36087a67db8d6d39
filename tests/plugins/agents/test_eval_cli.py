"""``botcriptofy agents eval``: scores per provider from supplied contexts, exit status under thresholds."""

from __future__ import annotations

import json
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from click.testing import CliRunner

import botcriptofy_agents
from botcriptofy._cli import cli
from botcriptofy.testing import render_settings
from botcriptofy_agent_configuration import CASES as CONFIGURATION_CASES
from botcriptofy_agent_security import CASES as SECURITY_CASES

from .conftest import MODEL_NAME

pytestmark = [pytest.mark.timeout(90), pytest.mark.usefixtures("settled_plugins")]  # they list the installed plugins

KEEP = {"agents", "agent_security", "agent_configuration"}


def run_eval(tmp_path: Path, *args: str, security: dict | None = None):
    settings_dir = tmp_path / "settings"
    settings_dir.mkdir(exist_ok=True)
    others = sorted({ep.name for ep in entry_points(group="botcriptofy")} - KEEP)
    settings = {"plugins": {"disabled": others}, "agent_security": security or {}, "agent_configuration": {"sample_interval": 3600}}
    (settings_dir / "settings.toml").write_text(render_settings(settings, state_dir=tmp_path / "state"))
    botcriptofy_agents.register_commands(cli=cli)
    return CliRunner().invoke(cli, ["--settings", str(settings_dir), "--env", "testing", "agents", "eval", *args])


def test_the_rules_pass_every_shipped_case(tmp_path):
    result = run_eval(
        tmp_path, "agent_security", str(SECURITY_CASES), "--min-accuracy", "1", "--min-schema-valid", "1", "--max-fallbacks", "0"
    )
    assert result.exit_code == 0, result.output
    assert "rules   schema-valid 100.0%  accuracy 100.0%  fallbacks 0" in result.output
    short = run_eval(tmp_path, "configuration", str(CONFIGURATION_CASES), "--json")  # "configuration" finds agent_configuration
    assert short.exit_code == 0, short.output
    report = json.loads(short.stdout)
    assert report["agent"] == "agent_configuration" and report["reports"][0]["cases"] >= 30 and report["reports"][0]["accuracy"] == 1.0


def test_a_threshold_not_met_exits_non_zero(tmp_path):
    lines = SECURITY_CASES.read_text().splitlines()
    wrong = json.loads(lines[0])
    wrong["expected_action"] = "lock_account"
    cases = tmp_path / "cases.jsonl"
    cases.write_text("\n".join([json.dumps(wrong), *lines[1:]]) + "\n")
    result = run_eval(tmp_path, "agent_security", str(cases), "--min-accuracy", "1")
    assert result.exit_code == 1
    assert "below threshold: rules: accuracy" in result.output and "line 1: expected lock_account, got none" in result.output
    # A latency threshold no decision can meet fails as well.
    assert run_eval(tmp_path, "agent_security", str(SECURITY_CASES), "--max-p95-ms", "0.000001").exit_code == 1


def test_a_malformed_case_names_its_line(tmp_path):
    cases = tmp_path / "bad.jsonl"
    cases.write_text(SECURITY_CASES.read_text().splitlines()[0] + '\n{"agent": "agent_security"}\n')
    result = run_eval(tmp_path, "agent_security", str(cases))
    assert result.exit_code != 0 and "bad.jsonl:2" in result.output
    unknown = run_eval(tmp_path, "finance", str(SECURITY_CASES))
    assert unknown.exit_code != 0 and "no agent 'finance'" in unknown.output


def test_the_model_provider_is_scored_against_the_local_server(tmp_path, local_ollama):
    cases = tmp_path / "few.jsonl"
    cases.write_text("\n".join(SECURITY_CASES.read_text().splitlines()[3:5]) + "\n")
    # A generous budget: this checks the scoring path, bench/agents_bench.py measures the latency.
    security = {"provider": "ollama", "model": MODEL_NAME, "host": local_ollama.url, "timeout": 60}
    result = run_eval(
        tmp_path, "agent_security", str(cases), "--provider", "ollama", "--min-schema-valid", "1", "--json", security=security
    )
    assert result.exit_code == 0, result.output
    (report,) = json.loads(result.stdout)["reports"]
    assert report["provider"] == "ollama" and report["cases"] == 2 and report["schema_valid_rate"] == 1.0
    assert set(report["fallback_reasons"]) <= {"outside_policy"}
