"""Prometheus collectors of the agents: decisions by source and outcome, latency, fallbacks by reason."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import Counter, Histogram

BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 1.5, 2.5, 5.0, 10.0)


@dataclass
class AgentMetrics:
    decisions: Counter = field(
        default_factory=lambda: Counter(
            "botcriptofy_agent_decisions_total", "Agent decisions by source and outcome.", ["agent", "source", "outcome"], registry=None
        )
    )
    latency: Histogram = field(
        default_factory=lambda: Histogram(
            "botcriptofy_agent_decision_seconds", "Time to decide, by provider.", ["agent", "provider"], buckets=BUCKETS, registry=None
        )
    )
    fallbacks: Counter = field(
        default_factory=lambda: Counter(
            "botcriptofy_agent_fallbacks_total", "Decisions the rules took over, by reason.", ["agent", "reason"], registry=None
        )
    )
    dropped: Counter = field(
        default_factory=lambda: Counter(
            "botcriptofy_agent_triggers_dropped_total", "Triggers dropped because the agent's queue was full.", ["agent"], registry=None
        )
    )

    def collectors(self) -> list[object]:
        return [self.decisions, self.latency, self.fallbacks, self.dropped]
