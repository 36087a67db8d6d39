"""The README's table of distributions names the versions their pyproject.toml files declare."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_distribution_row_shows_its_declared_version():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    listed = dict(re.findall(r"^\| \[`([a-z0-9-]+)`\]\([^)]*\) \| ([0-9][^ |]*) \|", readme, flags=re.MULTILINE))
    declared = {}
    files = [ROOT / "kernel" / "pyproject.toml", *ROOT.glob("plugins/*/pyproject.toml"), *ROOT.glob("plugins/agents/*/pyproject.toml")]
    for pyproject in files:
        project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
        declared[project["name"]] = project["version"]
    assert listed, "the README lists no distribution"
    assert {name: listed.get(name) for name in declared} == declared
