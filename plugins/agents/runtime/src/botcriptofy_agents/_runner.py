"""Running an agent: triggers queued off the request path, context, decision, policy, action, record, audit."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from botcriptofy import Actor, DataSubject, Notification, ProblemError, Schedule, ScheduledRun, StashKey, acting_as

from . import _store
from ._engine import Outcome, decide, digest, prompt_version
from ._metrics import AgentMetrics
from ._models import utcnow
from ._providers import OllamaProvider
from ._spec import Agent, AgentSettings, Decision, Periodic, Trigger
from ._ticker import Ticker

log = logging.getLogger("botcriptofy.agents")

QUEUE_SIZE = 200
DEFERRED_SIZE = 10000  # events waiting for their window update; past it they are dropped (and counted)
# How long deferred window updates gather before they run, in one batch: long enough that the request
# which published an event has answered before its update runs, short next to any window (minutes).
DEFER_BATCH_SECONDS = 0.02
STOP_TIMEOUT = 5.0


@dataclass
class RuntimeState:
    """The runtime plugin's state: the ollama provider and the metrics."""

    ollama: OllamaProvider = field(default_factory=OllamaProvider)
    metrics: AgentMetrics = field(default_factory=AgentMetrics)


RUNTIME: StashKey[RuntimeState] = StashKey("botcriptofy_agents.runtime")


class Windows:
    """Sliding-window counters per key (a subject and what is counted), and "fire once per window" marks.

    Events update them in memory on the request path: every operation is O(1) amortised (each hit
    is appended once and expired once; distinct values are counted as they come and go), so the
    cost of an event does not grow with the traffic in the window. A key crossing its threshold
    fires one trigger per window, so a burst of failed logins costs one decision, not one per login.
    """

    def __init__(self) -> None:
        self._hits: dict[Hashable, deque[tuple[float, Any]]] = {}
        self._values: dict[Hashable, dict[Any, int]] = {}
        self._fired: dict[Hashable, float] = {}

    def hit(self, key: Hashable, now: float, window: float, value: Any = None) -> int:
        hits = self._hits.setdefault(key, deque())
        hits.append((now, value))
        if value is not None:
            seen = self._values.setdefault(key, {})
            seen[value] = seen.get(value, 0) + 1
        return self.count(key, now, window)

    def count(self, key: Hashable, now: float, window: float) -> int:
        hits = self._hits.get(key)
        if not hits:
            return 0
        seen = self._values.get(key)
        while hits and hits[0][0] <= now - window:
            _, value = hits.popleft()
            if value is not None and seen is not None:
                left = seen[value] - 1
                if left:
                    seen[value] = left
                else:
                    del seen[value]
        if not hits:
            del self._hits[key]
            self._values.pop(key, None)
            return 0
        return len(hits)

    def values(self, key: Hashable, now: float, window: float) -> set[Any]:
        """The distinct values hit under ``key`` within the window."""
        self.count(key, now, window)
        return set(self._values.get(key, ()))

    def distinct(self, key: Hashable, now: float, window: float) -> int:
        """How many distinct values were hit under ``key`` within the window (O(1) amortised)."""
        self.count(key, now, window)
        return len(self._values.get(key, ()))

    def fire_once(self, key: Hashable, now: float, window: float) -> bool:
        """True the first time ``key`` fires within ``window`` seconds; False until the window passed."""
        last = self._fired.get(key)
        if last is not None and now - last < window:
            return False
        self._fired[key] = now
        if len(self._fired) > 10000:
            self._fired = {k: t for k, t in self._fired.items() if now - t < window}
        return True


class Runner:
    """One agent's worker: a bounded queue of triggers decided one at a time, off the request path."""

    def __init__(self, kernel: Any, agent: Agent) -> None:
        self.kernel = kernel
        self.agent = agent
        self.windows = Windows()
        self.queue: asyncio.Queue[Trigger | None] = asyncio.Queue(maxsize=QUEUE_SIZE)
        self.stopping = False
        self.task: asyncio.Task[None] | None = None
        self.decided = 0
        self.busy = False
        self._deferred: deque[tuple[Callable[..., None], tuple[Any, ...]]] = deque()
        self._drain_scheduled = False
        self.tickers: list[Ticker] = []

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._loop(), name=f"agent:{self.agent.name}")

    def submit(self, trigger: Trigger) -> bool:
        """Queue ``trigger``; False (and counted) when the agent is stopping or its queue is full."""
        if self.stopping:
            return False
        try:
            self.queue.put_nowait(trigger)
        except asyncio.QueueFull:
            metrics = metrics_of(self.kernel)
            if metrics is not None:
                metrics.dropped.labels(self.agent.name).inc()
            log.warning("agent %s: queue full, trigger %s dropped", self.agent.name, trigger.kind)
            return False
        return True

    def defer(self, callback: Callable[..., None], *args: Any) -> bool:
        """Run ``callback(*args)`` soon, on the event loop but outside the caller (an event handler's window update).

        The handler of an event then costs its publisher one append: window updates run in batches,
        ``DEFER_BATCH_SECONDS`` after the first of them, when the publisher has moved on (run at the
        next turn of the loop, they still landed inside the publishing request, which awaits). Pass
        the event's time in ``args``: the update runs later. False (and counted as dropped) when
        stopping or past ``DEFERRED_SIZE`` pending calls.
        """
        if self.stopping:
            return False
        if len(self._deferred) >= DEFERRED_SIZE:
            metrics = metrics_of(self.kernel)
            if metrics is not None:
                metrics.dropped.labels(self.agent.name).inc()
            return False
        self._deferred.append((callback, args))
        if not self._drain_scheduled:
            self._drain_scheduled = True
            asyncio.get_running_loop().call_later(DEFER_BATCH_SECONDS, self._drain)
        return True

    def _drain(self) -> None:
        self._drain_scheduled = False
        pending, self._deferred = self._deferred, deque()
        for callback, args in pending:
            try:
                callback(*args)
            except Exception:
                log.exception("agent %s: a deferred event update failed", self.agent.name, extra={"agent": self.agent.name})

    async def _loop(self) -> None:
        while not self.stopping:
            trigger = await self.queue.get()
            if trigger is None or self.stopping:
                break
            self.busy = True
            try:
                await handle(self.kernel.current(), self.agent, trigger)
            except Exception:
                log.exception("agent %s failed on trigger %s", self.agent.name, trigger.kind, extra={"agent": self.agent.name})
            finally:
                self.busy = False
                self.decided += 1

    async def idle(self) -> None:
        """Wait until every queued trigger is decided (tests and benches), events still to be delivered included."""
        await self.kernel.current().events.idle()
        while self._deferred or not self.queue.empty() or self.busy:  # noqa: ASYNC110 - a poll for tests and benches, never on a request path
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        """Stop after the decision in progress: a flag, a wake-up, and a bounded wait (then cancelled)."""
        self.stopping = True
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(None)
        task, self.task = self.task, None
        if task is None:
            return
        try:
            async with asyncio.timeout(STOP_TIMEOUT):
                await asyncio.shield(task)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _runner_key(name: str) -> StashKey[Runner]:
    key = _RUNNER_KEYS.get(name)
    if key is None:
        key = _RUNNER_KEYS[name] = StashKey(f"botcriptofy_agents.runner.{name}")
    return key


_RUNNER_KEYS: dict[str, StashKey[Runner]] = {}


def start_agent(kernel: Any, agent: Agent) -> Runner:
    """Start the agent's worker (call from the agent plugin's ``startup``).

    Without a workflow engine, also a :class:`Ticker` per :class:`Periodic` job of the agent's.
    """
    runner = Runner(kernel, agent)
    kernel.stash[_runner_key(agent.name)] = runner
    runner.start()
    if agent.periodic and not kernel.has_workflow_engine():
        settings = kernel.settings_for(agent.name)
        for job in agent.periodic:
            ticker = Ticker(
                kernel, float(getattr(settings, job.interval)), job.run, f"{agent.name}.{job.name}", immediately=job.immediately
            )
            runner.tickers.append(ticker)
            ticker.start()
    return runner


async def stop_agent(kernel: Any, agent: Agent) -> None:
    """Stop the agent's tickers and worker (call from the agent plugin's ``shutdown``): it takes no trigger any more."""
    runner = kernel.stash.get(_runner_key(agent.name), None)
    if runner is not None:
        tickers, runner.tickers = runner.tickers, []
        for ticker in tickers:
            await ticker.stop()
        await runner.stop()


def agent_schedules(kernel: Any, agent: Agent) -> list[Schedule]:
    """The agent's :class:`Periodic` jobs as schedules (return them from ``register_schedules``); none without a workflow engine."""
    if not kernel.has_workflow_engine():
        return []
    settings = kernel.settings_for(agent.name)

    def scheduled(job: Periodic) -> Schedule:
        async def run(_run: ScheduledRun) -> Any:
            return await job.run(kernel.current())

        return Schedule(job.name, run, interval=max(1.0, float(getattr(settings, job.interval))), description=job.description)

    return [scheduled(job) for job in agent.periodic]


def runner_of(kernel: Any, agent: Agent | str) -> Runner | None:
    name = agent if isinstance(agent, str) else agent.name
    return kernel.stash.get(_runner_key(name), None)  # type: ignore[no-any-return]


def registered_agents(kernel: Any) -> list[Agent]:
    hook = getattr(kernel.hook, "register_agents", None)
    if hook is None:
        return []
    found: list[Agent] = []
    for contributed in hook(kernel=kernel):
        found.extend(contributed or ())
    return sorted(found, key=lambda a: a.name)


def metrics_of(kernel: Any) -> AgentMetrics | None:
    state = kernel.stash.get(RUNTIME, None)
    return state.metrics if state is not None else None


def settings_of(kernel: Any, agent: Agent) -> AgentSettings:
    settings = kernel.settings_for(agent.name)
    if settings is None:
        raise RuntimeError(f"agent {agent.name} has no settings section; is its plugin enabled?")
    return settings  # type: ignore[no-any-return]


def notify_address(agent: Agent, settings: AgentSettings) -> str:
    return settings.notify or f"department:{agent.department}"


async def _consent(kernel: Any, settings: AgentSettings, trigger: Trigger) -> bool:
    """Whether the trigger's person may be processed by a model: asked only where a consent provider is present."""
    if trigger.user_id is None or not kernel.hook.has_consent.get_hookimpls():
        return True
    return bool(await kernel.has_consent(DataSubject(user_id=trigger.user_id, tenant_id=trigger.tenant_id), settings.consent_purpose))


async def handle(kernel: Any, agent: Agent, trigger: Trigger) -> dict[str, Any]:
    """Decide on ``trigger`` and act within policy, as the agent's service principal; return the record."""
    settings = settings_of(kernel, agent)
    actor = await kernel.service_actor(agent.name)
    with acting_as(actor):
        if not actor.can(f"{agent.department}:read"):
            context: dict[str, Any] = {}
            outcome = await decide(kernel, agent, settings.model_copy(update={"provider": "rules"}), trigger, context)
            row = _row(agent, settings, trigger, context, outcome, "forbidden", {"missing": f"{agent.department}:read"})
            await _store.insert(kernel, row)
            await kernel.audit(f"agents.{agent.department}.read", actor=actor, target=f"agent:{agent.name}", outcome="denied")
            _observe(kernel, agent, row)
            return row
        context = await agent.gather(kernel, actor, trigger)
        outcome = await decide(kernel, agent, settings, trigger, context, consent=await _consent(kernel, settings, trigger))
        status, detail, approval_id = await _act(kernel, agent, settings, actor, trigger, outcome.decision)
        row = _row(agent, settings, trigger, context, outcome, status, detail)
        row["approval_id"] = approval_id
        await _store.insert(kernel, row)
        if status in ("executed", "awaiting_approval", "failed", "forbidden"):
            await kernel.audit(
                f"agents.{outcome.decision.action}",
                actor=actor,
                target=f"agent_decision:{row['id']}",
                outcome={"executed": "success", "awaiting_approval": "pending", "failed": "failure"}.get(status, "denied"),
                details={"agent": agent.name, "action": outcome.decision.action, "trigger": trigger.kind, "approval_id": approval_id},
            )
        _observe(kernel, agent, row)
        return row


def _row(
    agent: Agent, settings: AgentSettings, trigger: Trigger, context: dict[str, Any], outcome: Outcome, status: str, detail: Any
) -> dict[str, Any]:
    return {
        "id": _store.new_id(),
        "agent": agent.name,
        "department": agent.department,
        "trigger_kind": trigger.kind,
        "subject": trigger.subject[:128],
        "subject_tenant": trigger.tenant_id,
        "trigger": trigger.to_dict(),
        "context_digest": digest(context),
        "provider": outcome.provider,
        "model": outcome.model,
        "prompt_version": prompt_version(agent),
        "raw_output": outcome.raw,
        "decision": outcome.decision.model_dump(mode="json"),
        "action": outcome.decision.action,
        "source": outcome.source,
        "fallback_reason": outcome.reason,
        "latency_ms": round(outcome.latency_ms, 3),
        "outcome": status,
        "outcome_detail": detail,
        "approval_id": None,
        "shadow": settings.shadow,
    }


def _observe(kernel: Any, agent: Agent, row: dict[str, Any]) -> None:
    metrics = metrics_of(kernel)
    if metrics is None:
        return
    metrics.decisions.labels(agent.name, row["source"], row["outcome"]).inc()
    metrics.latency.labels(agent.name, row["provider"]).observe(row["latency_ms"] / 1000)
    if row["fallback_reason"]:
        metrics.fallbacks.labels(agent.name, row["fallback_reason"]).inc()


async def _act(
    kernel: Any, agent: Agent, settings: AgentSettings, actor: Actor, trigger: Trigger, decision: Decision
) -> tuple[str, Any, str | None]:
    """Apply the policy to ``decision`` and act: return (outcome, detail, approval id)."""
    action = decision.action
    if action == "none":
        return "no_action", None, None
    if action not in settings.allowed_actions:
        return "refused_by_policy", {"allowed": list(settings.allowed_actions)}, None
    if settings.shadow:
        return "shadow", None, None
    spec = agent.actions.get(action)
    if spec is None:
        return "refused_by_policy", {"reason": "the agent has no such action"}, None
    since = utcnow() - timedelta(hours=1)
    if await _store.actions_since(kernel, agent.name, since) >= settings.max_actions_per_hour:
        return "capped", {"max_actions_per_hour": settings.max_actions_per_hour}, None
    if not actor.can(f"{agent.department}:act"):
        return "forbidden", {"missing": f"{agent.department}:act"}, None
    if action in settings.approval_actions:
        if spec.propose is None:
            return "failed", {"error": "the action cannot be proposed for approval"}, None
        try:
            request = spec.propose(kernel, trigger, decision)
        except ValueError as error:
            return "failed", {"error": str(error)}, None
        try:
            approval = await kernel.request_approval(
                action=request.action,
                summary=request.summary,
                department=agent.department,
                permission=request.permission,
                requester=actor,
                expires_in=settings.approval_expires_in,
                payload=dict(request.payload),
                tenant_id=request.tenant_id,
                destructive=request.destructive,
            )
        except ProblemError as error:
            return "failed", {"error": error.detail}, None
        return "awaiting_approval", {"action": request.action}, approval.id
    if spec.execute is None:
        return "failed", {"error": "the action runs only through an approval; list it in approval_actions"}, None
    try:
        detail = await spec.execute(kernel, actor, trigger, decision)
    except Exception as error:
        log.exception("agent %s: action %s failed", agent.name, action, extra={"agent": agent.name})
        return "failed", {"error": f"{type(error).__name__}: {error}"[:300]}, None
    return "executed", detail, None


async def approval_outcome(kernel: Any, payload: dict[str, Any]) -> None:
    """Record the outcome of an approval an agent asked for (``approvals.outcome``)."""
    approval_id = str(payload.get("id", ""))
    row = await _store.by_approval(kernel, approval_id)
    if row is None:
        return
    status = str(payload.get("status"))
    detail = {
        "action": payload.get("action"),
        "decided_by": payload.get("decided_by"),
        "result": payload.get("result"),
        "error": payload.get("error"),
    }
    await _store.update(kernel, row["id"], outcome=status, outcome_detail=detail)
    metrics = metrics_of(kernel)
    if metrics is not None:
        metrics.decisions.labels(row["agent"], row["source"], status).inc()


async def notify(
    kernel: Any, agent: Agent, settings: AgentSettings, trigger: Trigger, decision: Decision, *, subject: str
) -> dict[str, Any]:
    """The ``notify`` action every agent shares: the department's people, deduplicated per trigger and subject."""
    await kernel.notify(
        Notification(
            recipient=notify_address(agent, settings),
            subject=subject,
            body=decision.rationale,
            severity={"info": "info", "warning": "warning", "high": "error"}.get(decision.severity, "critical"),
            category=f"agents.{agent.department}",
            data={"agent": agent.name, "trigger": trigger.kind, "subject": trigger.subject, "action": decision.action},
            dedup_key=f"{agent.name}:{trigger.kind}:{trigger.subject}",
        )
    )
    return {"notified": notify_address(agent, settings)}
