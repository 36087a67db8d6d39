"""Evaluating an agent on cases with supplied contexts: schema-valid rate, accuracy, fallbacks, latency per provider."""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._engine import decide
from ._spec import Agent, AgentSettings, Trigger


@dataclass(frozen=True)
class Case:
    agent: str
    trigger: Trigger
    context: Mapping[str, Any]
    expected_action: str
    line: int


@dataclass
class Report:
    provider: str
    cases: int = 0
    schema_valid: int = 0
    correct: int = 0
    fallbacks: dict[str, int] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)
    misses: list[dict[str, Any]] = field(default_factory=list)
    invalid: list[dict[str, Any]] = field(default_factory=list)  # answers that were not valid JSON or not schema-valid, raw

    @property
    def schema_valid_rate(self) -> float:
        return self.schema_valid / self.cases if self.cases else 0.0

    @property
    def accuracy(self) -> float:
        return self.correct / self.cases if self.cases else 0.0

    @property
    def fallback_count(self) -> int:
        return sum(self.fallbacks.values())

    def percentile(self, q: float) -> float:
        if not self.latencies_ms:
            return 0.0
        if len(self.latencies_ms) == 1:
            return self.latencies_ms[0]
        return statistics.quantiles(self.latencies_ms, n=100, method="inclusive")[int(q) - 1]

    def to_dict(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "cases": self.cases,
            "schema_valid_rate": round(self.schema_valid_rate, 4),
            "accuracy": round(self.accuracy, 4),
            "fallbacks": self.fallback_count,
            "fallback_reasons": dict(sorted(self.fallbacks.items())),
            "p50_ms": round(self.percentile(50), 3),
            "p95_ms": round(self.percentile(95), 3),
        }


def load_cases(path: Path, agent: str | None = None) -> list[Case]:
    """Read a JSONL file of cases; raise ``ValueError`` naming the line of a malformed one."""
    cases = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
            case = Case(
                agent=str(data["agent"]),
                trigger=Trigger.from_dict(data["trigger"]),
                context=dict(data.get("context") or {}),
                expected_action=str(data["expected_action"]),
                line=number,
            )
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(
                f"{path}:{number}: not a case ({error!r}); each line is {{agent, trigger, context, expected_action}}"
            ) from None
        if agent is None or case.agent == agent:
            cases.append(case)
    return cases


async def evaluate(kernel: Any, agent: Agent, settings: AgentSettings, cases: Iterable[Case]) -> Report:
    """Decide every case with ``settings.provider`` (fallbacks included) and score it."""
    report = Report(provider=settings.provider)
    for case in cases:
        outcome = await decide(kernel, agent, settings, case.trigger, case.context)
        report.cases += 1
        report.latencies_ms.append(outcome.latency_ms)
        if outcome.source == "model" or outcome.reason in (None, "outside_policy"):
            report.schema_valid += 1
        if outcome.reason is not None:
            report.fallbacks[outcome.reason] = report.fallbacks.get(outcome.reason, 0) + 1
        if outcome.reason in ("invalid_json", "schema_invalid"):
            report.invalid.append({"line": case.line, "reason": outcome.reason, "raw": (outcome.raw or "")[:500]})
        if outcome.decision.action == case.expected_action:
            report.correct += 1
        else:
            report.misses.append(
                {"line": case.line, "expected": case.expected_action, "got": outcome.decision.action, "source": outcome.source}
            )
    return report
