"""The shipped alert rules and dashboard: printed by the command line, rules checked and unit-tested by promtool."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

BOTCRIPTOFY = str(Path(sys.executable).with_name("botcriptofy"))
HERE = Path(__file__).parent


def printed(*args: str) -> str:
    done = subprocess.run([BOTCRIPTOFY, "observability", *args], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_promtool_checks_and_unit_tests_the_printed_rules(tmp_path):
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: .ci/run installs Debian's prometheus package"
    rules = tmp_path / "alerts.yml"
    rules.write_text(printed("rules"))
    checked = subprocess.run([promtool, "check", "rules", str(rules)], capture_output=True, text=True, timeout=60, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 11 rules found" in checked.stdout
    shutil.copy(HERE / "alerts_test.yml", tmp_path / "alerts_test.yml")
    tested = subprocess.run([promtool, "test", "rules", str(tmp_path / "alerts_test.yml")], capture_output=True, text=True,
                            timeout=60, check=False)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_every_alert_has_a_unit_test():
    rules = printed("rules")
    names = {line.split(":", 1)[1].strip() for line in rules.splitlines() if line.strip().startswith("- alert:")}
    tested = {line.split(":", 1)[1].strip() for line in (HERE / "alerts_test.yml").read_text().splitlines()
              if line.strip().startswith("alertname:")}
    untested = names - tested - {"BotCriptoFyWorkerMemoryHigh", "BotCriptoFySlowHook"}
    assert untested == set()


def test_the_dashboard_is_printed_as_grafana_json():
    dashboard = json.loads(printed("dashboard"))
    titles = {panel["title"] for panel in dashboard["panels"] if panel["type"] == "row"}
    assert titles == {"Service overview", "Per-plugin latency", "Cache", "Rate limits", "Billing", "Agents", "Workflows and backups",
                      "Events and webhooks"}
    assert all(panel.get("targets") for panel in dashboard["panels"] if panel["type"] != "row")
