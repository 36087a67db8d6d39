"""The Temporal side: the workflow and activity definitions every plugin's worker runs.

Plugins never see temporalio. Their :class:`botcriptofy.Workflow` functions run inside one dynamic
workflow class that dispatches on the workflow type name and hands them a
:class:`TemporalContext`; their activities, schedule handlers and approval actions run inside one
dynamic activity that dispatches on the activity type name. Workflows here run outside Temporal's
sandbox (plugins' modules import the kernel, which the sandbox would re-import on every run):
determinism is the author's part of the contract, as ``docs/workflows.md`` explains.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from temporalio import activity, workflow
from temporalio.common import RawValue, RetryPolicy, SearchAttributeKey
from temporalio.exceptions import ActivityError, ApplicationError, TemporalError
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    ExecuteWorkflowInput,
    Interceptor,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
)

from botcriptofy import ProblemError, ScheduledRun, acting_as

from ._codec import approval_from_data

if TYPE_CHECKING:
    from prometheus_client import Counter

    from ._engine import Engine

APPROVAL_WORKFLOW = "botcriptofy.approval"
SCHEDULED_CALL_WORKFLOW = "botcriptofy.scheduled-call"
PRESENT_ACTIVITY = "botcriptofy.approval-present"
OUTCOME_ACTIVITY = "botcriptofy.approval-outcome"
AUDIT_ACTIVITY = "botcriptofy.approval-audit"
# Workflows started before this patch had the API process audit the request and the decision.
AUDIT_IN_WORKFLOW = "approval-audit-in-workflow"
SCHEDULE_PREFIX = "schedule:"
ACTION_PREFIX = "approval-action:"
SCHEDULED_START = SearchAttributeKey.for_datetime("TemporalScheduledStartTime")


def retry_policy(retry: Mapping[str, Any]) -> RetryPolicy:
    return RetryPolicy(
        initial_interval=timedelta(seconds=float(retry.get("initial", 1.0))),
        maximum_interval=timedelta(seconds=float(retry.get("maximum", 60.0))),
        backoff_coefficient=2.0,
        maximum_attempts=int(retry.get("attempts", 0)),
        non_retryable_error_types=["ClientError"],
    )


def _decode(args: Sequence[RawValue], converter: Any) -> dict[str, Any]:
    if not args:
        return {}
    value = converter.from_payload(args[0].payload, dict)
    return dict(value or {})


class TemporalContext:
    """The :class:`botcriptofy.WorkflowContext` of a plugin's workflow running on Temporal."""

    def __init__(self, engine: Engine, signals: dict[str, list[dict[str, Any]]]) -> None:
        self._engine = engine
        self._signals = signals
        self.workflow_id = workflow.info().workflow_id

    def now(self) -> datetime:
        return workflow.now()

    async def sleep(self, seconds: float) -> None:
        await workflow.sleep(timedelta(seconds=seconds))

    async def activity(self, name: str, input: Mapping[str, Any] | None = None) -> Any:
        owner, declared = self._engine.registry.activity(name)
        return await workflow.execute_activity(
            name,
            dict(input or {}),
            task_queue=self._engine.queue(owner),
            start_to_close_timeout=timedelta(seconds=declared.timeout),
            retry_policy=retry_policy({**self._engine.retry, "attempts": declared.max_attempts}),
        )

    async def wait_for_signal(self, name: str, *, timeout: float | None = None) -> Mapping[str, Any] | None:  # noqa: ASYNC109
        queue = self._signals.setdefault(name, [])
        try:
            await workflow.wait_condition(lambda: bool(queue), timeout=None if timeout is None else timedelta(seconds=timeout))
        except TimeoutError:
            return None
        return queue.pop(0)

    def patched(self, patch_id: str) -> bool:
        return workflow.patched(patch_id)


@workflow.defn(dynamic=True, sandboxed=False)
class PluginWorkflow:
    """Every plugin's :class:`botcriptofy.Workflow`, dispatched on the workflow type name."""

    def __init__(self) -> None:
        self.signals: dict[str, list[dict[str, Any]]] = {}
        self.engine: Engine | None = None  # set by the engine's interceptor before run

    @workflow.run
    async def run(self, args: Sequence[RawValue]) -> Any:
        name = workflow.info().workflow_type
        assert self.engine is not None
        declared = self.engine.registry.workflows.get(name)
        if declared is None:
            # Not an ApplicationError: the workflow task fails and is retried, so the run resumes
            # once the plugin that registers it is enabled again.
            raise RuntimeError(f"no enabled plugin registers the workflow '{name}'")
        try:
            return await declared[1].run(TemporalContext(self.engine, self.signals), _decode(args, workflow.payload_converter()))
        except TemporalError:
            raise
        except Exception as error:
            # A plugin's bug or refusal fails the execution (counted, shown to operators) instead of
            # failing its workflow task again and again.
            raise ApplicationError(f"{type(error).__name__}: {error}", type=type(error).__name__, non_retryable=True) from error

    @workflow.signal(dynamic=True)
    def signal(self, name: str, args: Sequence[RawValue]) -> None:
        self.signals.setdefault(name, []).append(_decode(args, workflow.payload_converter()))


@workflow.defn(name=SCHEDULED_CALL_WORKFLOW, sandboxed=False)
class ScheduledCall:
    """One tick of a plugin's schedule: run its handler as a retried activity on the plugin's queue."""

    @workflow.run
    async def run(self, call: dict[str, Any]) -> Any:
        scheduled = workflow.info().typed_search_attributes.get(SCHEDULED_START)
        return await workflow.execute_activity(
            SCHEDULE_PREFIX + call["schedule"],
            {"scheduled_at": scheduled.isoformat() if scheduled else None, "payload": call.get("payload") or {}},
            start_to_close_timeout=timedelta(seconds=float(call.get("timeout", 300))),
            retry_policy=retry_policy(call.get("retry") or {}),
        )


PLUGIN_WORKFLOWS: list[type] = [PluginWorkflow, ScheduledCall]


@workflow.defn(name=APPROVAL_WORKFLOW, sandboxed=False)
class ApprovalWorkflow:
    """One approval: present it, wait for a decision or the expiry, run the approved action once, report."""

    @workflow.init
    def __init__(self, request: dict[str, Any]) -> None:
        self.state: dict[str, Any] = dict(request["approval"])
        self.decider_kind: str | None = None
        self.audits: bool | None = None  # whether this workflow writes the trail (None until run() has asked)
        self.requested_on_record = False

    @workflow.run
    async def run(self, request: dict[str, Any]) -> dict[str, Any]:
        quick = timedelta(seconds=30)
        presenting = RetryPolicy(maximum_attempts=5)
        # The trail is written from here, in the workflow's order: no step can be recorded before the one it follows.
        audits = self.audits = workflow.patched(AUDIT_IN_WORKFLOW)
        if audits:
            details = {"expires_at": self.state["expires_at"], "destructive": self.state.get("destructive", False)}
            await self._audit("approval.requested", self.state["requester"], request.get("requester_kind"), details)
            self.requested_on_record = True
        await workflow.execute_activity(PRESENT_ACTIVITY, self.state, start_to_close_timeout=quick, retry_policy=presenting)
        expires_at = datetime.fromisoformat(self.state["expires_at"])
        remaining = max((expires_at - workflow.now()).total_seconds(), 0.001)
        try:
            await workflow.wait_condition(lambda: self.state["status"] != "pending", timeout=timedelta(seconds=remaining))
        except TimeoutError:
            self.state["status"] = "expired"
        if audits and self.state["status"] in ("approved", "rejected"):
            details = {"reason": self.state.get("reason")}
            await self._audit(f"approval.{self.state['status']}", self.state["decided_by"], self.decider_kind, details)
        result: Any = None
        error: str | None = None
        if self.state["status"] == "approved":
            try:
                result = await workflow.execute_activity(
                    ACTION_PREFIX + self.state["action"],
                    self.state,
                    task_queue=request["action_queue"],
                    start_to_close_timeout=timedelta(seconds=float(request.get("action_timeout", 300))),
                    retry_policy=retry_policy(request.get("retry") or {}),
                )
            except ActivityError as failure:
                cause = failure.cause
                error = str(cause.message if isinstance(cause, ApplicationError) else failure)
        outcome = {"approval": self.state, "result": result, "error": error}
        await workflow.execute_activity(OUTCOME_ACTIVITY, outcome, start_to_close_timeout=quick, retry_policy=presenting)
        await workflow.wait_condition(workflow.all_handlers_finished)  # a refusal still being recorded is not cut short
        return outcome

    async def _audit(self, step: str, actor_id: str, actor_kind: str | None, details: dict[str, Any]) -> None:
        """Record ``step``; retried until the trail takes it, since the action must not run unrecorded."""
        entry = {"approval": self.state, "step": step, "actor_id": actor_id, "actor_kind": actor_kind, "details": details}
        await workflow.execute_activity(
            AUDIT_ACTIVITY,
            entry,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=RetryPolicy(maximum_interval=timedelta(seconds=60)),
        )

    @workflow.update
    def decide(self, decision: dict[str, Any]) -> dict[str, Any]:
        self.state.update(
            status="approved" if decision["approve"] else "rejected",
            decided_by=decision["actor"],
            decided_at=workflow.now().isoformat(),
            reason=decision.get("reason"),
        )
        self.decider_kind = decision.get("actor_kind")
        return {**self.state, "audited_by_workflow": workflow.patched(AUDIT_IN_WORKFLOW)}

    @decide.validator
    def _decide_only_once(self, decision: dict[str, Any]) -> None:
        if self.state.get("status") != "pending":
            raise ApplicationError(f"the request is already {self.state.get('status', 'starting')}", type="Conflict", non_retryable=True)

    @workflow.update
    async def refuse(self, attempt: dict[str, Any]) -> None:
        """Record a decision refused for want of the permission, after the request it refuses is on record."""
        await workflow.wait_condition(lambda: self.requested_on_record)
        await self._audit("approval.decision_refused", attempt["actor"], attempt.get("actor_kind"), {"outcome": "denied"})

    @refuse.validator
    def _refuse_in_order(self, attempt: dict[str, Any]) -> None:
        if self.audits is False:  # started by 0.1.1: the API process writes this request's trail
            raise ApplicationError("this request's trail is written by the API process", type="NotAudited", non_retryable=True)

    @workflow.query
    def current(self) -> dict[str, Any]:
        return dict(self.state)


def client_error(error: ProblemError) -> ApplicationError:
    """A 4xx problem will not fix itself by retrying: stop retrying and report it."""
    return ApplicationError(f"{error.title}: {error.detail}", type="ClientError", non_retryable=True)


# How long an activity waits for the first generation to finish starting its plugins.
STARTING_WAIT = 30.0


async def serving(kernel: Any) -> Any:
    """The generation serving requests. While the first one is still starting its plugins, wait for it.

    The engine's worker starts with the workflows plugin, and a schedule can fire before the plugins
    started after it (auth, for the service principal) have run their ``startup``. The kernel
    assembles a generation's app only once all of them have; until then ``app`` is None.
    """
    current = kernel.current()
    async with asyncio.timeout(STARTING_WAIT):
        while current.app is None:
            await asyncio.sleep(0.05)
            current = kernel.current()
    return current


def plugin_activity(engine: Engine) -> Callable[..., Any]:
    """The dynamic activity of one engine: schedule handlers, approval actions and plugins' activities.

    Each runs as its owning plugin's service principal (``kernel.service_actor(plugin)``, read with
    :func:`botcriptofy.acting_actor`), so permission checks and the audit trail apply to it.
    """

    @activity.defn(dynamic=True)
    async def run(args: Sequence[RawValue]) -> Any:
        name = activity.info().activity_type
        data = _decode(args, activity.payload_converter())
        kernel = await serving(engine.kernel)
        try:
            if name.startswith(SCHEDULE_PREFIX):
                owner, schedule = engine.registry.schedule(name.removeprefix(SCHEDULE_PREFIX))
                scheduled = data.get("scheduled_at")
                run_info = ScheduledRun(
                    schedule_id=schedule.id,
                    scheduled_at=datetime.fromisoformat(scheduled) if scheduled else None,
                    started_at=datetime.now(UTC),
                    payload=data.get("payload") or dict(schedule.payload),
                )
                with acting_as(await kernel.service_actor(owner)):
                    return await schedule.handler(run_info)
            if name.startswith(ACTION_PREFIX):
                owner, action = engine.registry.action(name.removeprefix(ACTION_PREFIX))
                with acting_as(await kernel.service_actor(owner)):
                    return await action.execute(approval_from_data(data))
            owner, declared = engine.registry.activity(name)
            with acting_as(await kernel.service_actor(owner)):
                return await declared.execute(data)
        except ProblemError as error:
            if error.status < 500:
                raise client_error(error) from error
            raise

    return run


class EngineInterceptor(Interceptor):
    """Hand plugin workflows their engine, and count workflow and activity failures for ``/metrics``."""

    def __init__(self, engine: Engine, workflow_failures: Counter, activity_failures: Counter) -> None:
        self.engine = engine
        self.workflow_failures = workflow_failures
        self.activity_failures = activity_failures

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _CountingActivities(next, self.activity_failures)

    def workflow_interceptor_class(self, input: WorkflowInterceptorClassInput) -> type[WorkflowInboundInterceptor]:
        counter = self.workflow_failures
        engine = self.engine

        class EngineWorkflows(WorkflowInboundInterceptor):
            async def execute_workflow(self, input: ExecuteWorkflowInput) -> Any:
                instance = workflow.instance()
                if isinstance(instance, PluginWorkflow):
                    instance.engine = engine
                try:
                    return await super().execute_workflow(input)
                except (asyncio.CancelledError, workflow.ContinueAsNewError):
                    raise
                except Exception:
                    if not workflow.unsafe.is_replaying():
                        counter.labels(workflow=workflow.info().workflow_type).inc()
                    raise

        return EngineWorkflows


class _CountingActivities(ActivityInboundInterceptor):
    def __init__(self, next: ActivityInboundInterceptor, counter: Counter) -> None:
        super().__init__(next)
        self.counter = counter

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        try:
            return await super().execute_activity(input)
        except asyncio.CancelledError:
            raise
        except Exception:
            self.counter.labels(activity=activity.info().activity_type).inc()
            raise
