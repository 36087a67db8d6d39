"""docs/hooks.md and botcriptofy.hookspecs agree: every hook, its exact signature and its kind."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from botcriptofy import hookspecs

DOC = Path(__file__).resolve().parents[2] / "docs" / "hooks.md"
ENTRY = re.compile(r"### `(?P<name>\w+)`\n\n```python\ndef (?P=name)(?P<signature>\(.*?\) -> [^\n]+)\n```\n\n\*(?P<kind>[^*]+)\*")


def specs() -> dict[str, object]:
    return {name: getattr(hookspecs, name) for name in dir(hookspecs) if hasattr(getattr(hookspecs, name), "botcriptofy_spec")}


def documented() -> dict[str, tuple[str, str]]:
    return {m["name"]: (m["signature"], m["kind"]) for m in ENTRY.finditer(DOC.read_text())}


def test_every_hook_is_documented_and_nothing_else():
    assert set(documented()) == set(specs())


def test_signatures_match_the_specs():
    docs = documented()
    for name, spec in specs().items():
        expected = str(inspect.signature(spec)).replace("'", "")
        assert docs[name][0] == expected, f"docs/hooks.md shows {name}{docs[name][0]}, the spec is {name}{expected}"


def test_first_result_hooks_are_marked_as_such():
    docs = documented()
    for name, spec in specs().items():
        first = spec.botcriptofy_spec["firstresult"]
        assert (docs[name][1] == "First result") == first, f"{name}: documented as {docs[name][1]!r}"


def test_every_spec_has_a_docstring():
    for name, spec in specs().items():
        assert inspect.getdoc(spec), f"hook {name} has no docstring"
