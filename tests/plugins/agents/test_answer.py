"""What the model is asked to answer: a schema the grammar cannot leave, and a token cap no valid answer reaches."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from botcriptofy_agent_configuration import AGENT as CONFIGURATION
from botcriptofy_agent_security import AGENT as SECURITY
from botcriptofy_agents import ANSWER_STRING_MAX, CONFIDENCE_STEPS, OllamaProvider, Windows, answer_schema, answer_token_bound

pytestmark = pytest.mark.timeout(60)
AGENTS = [SECURITY, CONFIGURATION]


def _strings(node: Any) -> list[dict[str, Any]]:
    if isinstance(node, list):
        return [s for item in node for s in _strings(item)]
    if not isinstance(node, dict):
        return []
    found = [node] if node.get("type") == "string" else []
    return found + [s for value in node.values() for s in _strings(value)]


def _longest(schema: dict[str, Any], char: str) -> dict[str, Any]:
    """The longest answer valid against ``schema``: the longest enum values, every string at its maximum of ``char``."""
    answer: dict[str, Any] = {}
    for name, member in schema["properties"].items():
        if "enum" in member:
            answer[name] = max(member["enum"], key=lambda v: len(json.dumps(v)))
        else:
            answer[name] = char * member["maxLength"]
    return answer


@pytest.mark.parametrize("agent", AGENTS, ids=lambda a: a.name)
def test_every_answer_the_schema_allows_is_a_valid_decision(agent):
    schema = agent.schema
    strings = _strings(schema)
    assert strings and all("enum" in s or s["maxLength"] <= ANSWER_STRING_MAX for s in strings)
    confidence = schema["properties"]["confidence"]
    assert confidence["enum"] == list(CONFIDENCE_STEPS) and "minimum" not in confidence  # a grammar enforces no number bounds
    for value in CONFIDENCE_STEPS:
        agent.decision.model_validate({"action": "none", "severity": "info", "confidence": value, "rationale": ""})
    for char in ("x", "'", "%", " "):
        agent.decision.model_validate(_longest(schema, char))
    for text in (s for s in strings if "enum" not in s):
        # No control character, quote or backslash: llama-cpp-python's converter alone would let a raw
        # line break into the string (invalid JSON, seen from SmolLM2 as ");\n\n#\n...").
        assert all(re.fullmatch(text["pattern"], bad) is None for bad in ("a\nb", "a\tb", 'a"b', "a\\b", "x" * 33))
        assert re.fullmatch(text["pattern"], "6 failed logins: lock (u-1), 80%")
    assert "parameters" not in schema["properties"]  # not asked for: the model would spend tokens on them
    assert "parameters" in answer_schema(agent.decision, parameters=True)["properties"]
    assert agent.schema is agent.schema  # computed once, not per decision


@pytest.mark.parametrize("agent", AGENTS, ids=lambda a: a.name)
def test_the_token_cap_exceeds_the_longest_valid_answer(agent, local_ollama):
    cap = OllamaProvider().num_predict(agent.schema)
    assert cap == answer_token_bound(agent.schema)
    tokenize = local_ollama._llama.tokenize
    for char in ("x", "'", "é", "\u2028", "🔒"):  # beyond the pattern too: the bound assumes any character
        text = json.dumps(_longest(agent.schema, char), ensure_ascii=char == "\u2028")
        assert len(tokenize(text.encode(), add_bos=False)) < cap, char
    assert OllamaProvider(max_tokens=64).num_predict(agent.schema) == 64


def test_an_unbounded_schema_has_no_token_bound():
    with pytest.raises(ValueError):
        answer_token_bound({"type": "object", "properties": {"note": {"type": "string"}}})


def test_windows_count_distinct_values_as_they_come_and_expire():
    windows = Windows()
    for t, account in enumerate(["a", "b", "a", "c", "a"]):
        windows.hit("addr", float(t), 10.0, value=account)
    assert windows.distinct("addr", 4.0, 10.0) == 3 and windows.values("addr", 4.0, 10.0) == {"a", "b", "c"}
    assert windows.distinct("addr", 12.5, 10.0) == 2  # hits at 0, 1, 2 expired: "b" left, "a" (4) and "c" (3) stay
    assert windows.values("addr", 12.5, 10.0) == {"a", "c"} and windows.count("addr", 12.5, 10.0) == 2
    assert windows.distinct("addr", 30.0, 10.0) == 0 and windows.count("addr", 30.0, 10.0) == 0
