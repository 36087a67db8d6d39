"""The configuration agent: refused and rolled-back configurations, readiness failures, sustained CPU and memory."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from botcriptofy import Actor, Envelope, StashKey
from botcriptofy_agents import (
    ActionRequest,
    ActionSpec,
    Agent,
    Decision,
    Periodic,
    Trigger,
    decision_model,
    notify,
    read_decisions,
    runner_of,
    settings_of,
)

from ._settings import ACTIONS, ConfigurationSettings

log = logging.getLogger("botcriptofy.agents.configuration")

NAME = "agent_configuration"
DEPARTMENT = "configuration"
ConfigurationDecision = decision_model("ConfigurationDecision", ACTIONS)

INSTRUCTIONS = (
    "You watch refused or rolled-back configurations, readiness and sustained CPU or memory pressure. "
    "Roll a configuration back only when readiness fails right after a change."
)


@dataclass
class Sample:
    """One look at the service: CPU and memory percent, failing readiness checks, the last refused configuration."""

    cpu: float | None = None
    memory: float | None = None
    failing: tuple[str, ...] = ()
    refused: str | None = None


@dataclass
class Watch:
    """What the agent remembers between samples (per process)."""

    cpu: list[float] = field(default_factory=list)
    memory: list[float] = field(default_factory=list)
    readiness: int = 0
    refused_seen: str | None = None
    version: int | None = None
    previous_version: int | None = None
    changed_at: float | None = None
    last: Sample = field(default_factory=Sample)
    cpu_times: tuple[int, int] | None = None


WATCH: StashKey[Watch] = StashKey("botcriptofy_agent_configuration.watch")


def watch_of(kernel: Any) -> Watch:
    return kernel.stash.setdefault(WATCH, Watch())  # type: ignore[no-any-return]


def _decision(action: str, severity: str, confidence: float, rationale: str, **parameters: str) -> Decision:
    return ConfigurationDecision(action=action, severity=severity, confidence=confidence, rationale=rationale, parameters=parameters)


def rules(trigger: Trigger, context: Mapping[str, Any], settings: ConfigurationSettings) -> Decision:
    """The deterministic decision (SPEC §7 thresholds); the fallback whenever the model fails."""
    data = trigger.data
    kind = trigger.kind
    if kind == "config_refused":
        return _decision("notify", "warning", 0.9, "A configuration change was refused; the service keeps the previous one.")
    if kind == "config_rolled_back":
        return _decision("notify", "info", 0.9, f"The configuration was rolled back to version {data.get('rollback_to')}.")
    if kind == "readiness":
        failures = int(data.get("failures", 0))
        if failures < settings.readiness_failures:
            return _decision("none", "info", 0.8, "Readiness failed fewer times than the threshold.")
        since = context.get("seconds_since_change")
        if context.get("previous_version") and since is not None and float(since) <= settings.rollback_window:
            return _decision("rollback_config", "critical", 0.8, "Readiness fails right after a configuration change: roll it back.")
        return _decision("notify", "high", 0.85, f"Readiness failed {failures} samples in a row.")
    if kind in ("cpu", "memory"):
        percent = float(data.get("percent", 0.0))
        samples = int(data.get("samples", 0))
        threshold, critical = (
            (settings.cpu_threshold, settings.cpu_critical) if kind == "cpu" else (settings.memory_threshold, settings.memory_critical)
        )
        if samples < settings.sustained_samples or percent <= threshold:
            return _decision("none", "info", 0.8, f"{kind} pressure is not sustained above {threshold:g} %.")
        if percent >= critical:
            return _decision("open_incident", "critical", 0.85, f"{kind} at {percent:.0f} % for {samples} samples.")
        return _decision("notify", "warning", 0.8, f"{kind} above {threshold:g} % for {samples} samples ({percent:.0f} %).")
    return _decision("none", "info", 0.5, f"No rule for '{kind}'.")


async def gather(kernel: Any, actor: Actor, trigger: Trigger) -> dict[str, Any]:
    """Read-only context: the configuration version, how recent the last change is, this department's recent decisions."""
    watch = watch_of(kernel)
    since = datetime.now(UTC) - timedelta(hours=24)
    earlier = await read_decisions(kernel, actor, department=DEPARTMENT, since=since, limit=200)
    return {
        "config_version": kernel.config_version,
        "previous_version": watch.previous_version,
        "seconds_since_change": round(time.monotonic() - watch.changed_at, 1) if watch.changed_at is not None else None,
        "decisions_24h": len(earlier),
    }


async def _notify(kernel: Any, actor: Actor, trigger: Trigger, decision: Decision) -> dict[str, Any]:
    return await notify(kernel, AGENT, settings_of(kernel, AGENT), trigger, decision, subject=f"[Configurações] {trigger.kind}")


async def _open_incident(kernel: Any, actor: Actor, trigger: Trigger, decision: Decision) -> dict[str, Any]:
    sent = await notify(kernel, AGENT, settings_of(kernel, AGENT), trigger, decision, subject=f"[Configurações] Incidente: {trigger.kind}")
    return {"incident": True, **sent}


def _propose_rollback(kernel: Any, trigger: Trigger, decision: Decision) -> ActionRequest:
    version = watch_of(kernel).previous_version
    if not version:
        raise ValueError("no earlier configuration version to roll back to")
    return ActionRequest(
        action="config.rollback",
        permission="configuration:manage",
        summary=f"Reverter a configuração para a versão {version}: {decision.rationale}",
        payload={"version": version},
    )


async def _sample(kernel: Any) -> dict[str, int]:
    return {"triggers": len(await sample_once(kernel))}


AGENT = Agent(
    name=NAME,
    department=DEPARTMENT,
    decision=ConfigurationDecision,
    rules=rules,  # type: ignore[arg-type]
    gather=gather,
    actions={
        "notify": ActionSpec("notify", execute=_notify),
        "open_incident": ActionSpec("open_incident", execute=_open_incident),
        "rollback_config": ActionSpec("rollback_config", propose=_propose_rollback),
    },
    instructions=INSTRUCTIONS,
    prompt_version="2",
    periodic=(
        Periodic("sample", _sample, "sample_interval", "Sample CPU, memory, readiness and refused configurations.", immediately=True),
    ),
    description="Refused and rolled-back configurations, readiness failures, sustained CPU and memory pressure.",
)


def observe(kernel: Any, envelope: Envelope) -> None:
    """``kernel.config_applied``: remember the change (for rollbacks) and decide on rollbacks."""
    runner = runner_of(kernel, AGENT)
    if runner is None or runner.stopping:
        return
    payload = envelope.payload
    watch = watch_of(kernel)
    version = payload.get("version")
    if isinstance(version, int) and version != watch.version:
        # Versions are numbered in the order they were applied: the one before is the one to roll back to.
        watch.previous_version = version - 1 if version > 1 else None
        watch.version, watch.changed_at = version, time.monotonic()
    if payload.get("rollback_to") is not None:
        runner.submit(
            Trigger(
                "config_rolled_back",
                f"version:{version}",
                {"version": version, "rollback_to": payload["rollback_to"], "source": payload.get("source")},
            )
        )


def observe_sample(kernel: Any, sample: Sample) -> list[Trigger]:
    """Fold one sample into the streaks; queue (and return) the triggers it crosses, once per episode."""
    runner = runner_of(kernel, AGENT)
    if runner is None or runner.stopping:
        return []
    settings: ConfigurationSettings = settings_of(kernel, AGENT)  # type: ignore[assignment]
    watch = watch_of(kernel)
    watch.last = sample
    fired: list[Trigger] = []
    for kind, value, threshold, streak in (
        ("cpu", sample.cpu, settings.cpu_threshold, watch.cpu),
        ("memory", sample.memory, settings.memory_threshold, watch.memory),
    ):
        if value is None:
            continue
        if value > threshold:
            streak.append(value)
        else:
            streak.clear()
        if len(streak) == settings.sustained_samples:
            fired.append(Trigger(kind, kind, {"percent": round(sum(streak) / len(streak), 1), "samples": len(streak)}))
    watch.readiness = watch.readiness + 1 if sample.failing else 0
    if watch.readiness == settings.readiness_failures:
        fired.append(Trigger("readiness", "readiness", {"failures": watch.readiness, "checks": list(sample.failing)}))
    if sample.refused and sample.refused != watch.refused_seen:
        fired.append(Trigger("config_refused", "config", {"error": sample.refused[:200]}))
    watch.refused_seen = sample.refused
    for trigger in fired:
        runner.submit(trigger)
    return fired


# -- reading the machine ------------------------------------------------------------------


def cpu_percent(watch: Watch) -> float | None:
    """System CPU use since the previous call, from /proc/stat (None on the first call or off Linux)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return None
    values = [int(v) for v in fields]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    total = sum(values)
    previous, watch.cpu_times = watch.cpu_times, (idle, total)
    if previous is None or total == previous[1]:
        return None
    return round(100.0 * (1 - (idle - previous[0]) / (total - previous[1])), 1)


def memory_percent() -> float | None:
    """Memory in use, from /proc/meminfo (1 - MemAvailable/MemTotal; None off Linux)."""
    try:
        info = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines() if ":" in line)
        total = int(info["MemTotal"].split()[0])
        available = int(info["MemAvailable"].split()[0])
    except (OSError, KeyError, ValueError):
        return None
    return round(100.0 * (1 - available / total), 1)


async def failing_checks(kernel: Any) -> tuple[str, ...]:
    """Names of the readiness checks failing now (the agent's own plugin excluded)."""
    failing = []
    for plugin, contributed in (await kernel.broadcast("health_checks", kernel=kernel)).items():
        for check in contributed or ():
            try:
                result = check.check()
                if asyncio.iscoroutine(result):
                    async with asyncio.timeout(check.timeout):
                        result = await result
                ok = result is None or bool(result)
            except Exception:
                ok = False
            if not ok:
                failing.append(check.name if check.name.startswith(f"{plugin}.") else f"{plugin}.{check.name}")
    return tuple(failing)


async def sample_once(kernel: Any) -> list[Trigger]:
    watch = watch_of(kernel)
    sample = Sample(
        cpu=cpu_percent(watch),
        memory=memory_percent(),
        failing=await failing_checks(kernel),
        refused=getattr(kernel.runtime, "last_error", None),
    )
    return observe_sample(kernel, sample)
