"""The engine: the Temporal client, one worker per plugin task queue, schedules kept in step with plugins.

A watcher follows the kernel's generations: when a plugin is enabled, its worker starts and its
schedules are created or resumed; when it is disabled, its worker stops gracefully (running
activities finish, workflows wait in Temporal for the plugin to return) and its schedules are
paused, never deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleState,
    ScheduleUpdate,
    ScheduleUpdateInput,
    WorkflowExecutionStatus,
    WorkflowFailureError,
)
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.exceptions import FailureError as TemporalFailure
from temporalio.runtime import LogForwardingConfig, LoggingConfig, Runtime, TelemetryConfig, TelemetryFilter
from temporalio.service import RPCError, RPCStatusCode, TLSConfig
from temporalio.worker import Worker

from botcriptofy import ProblemError, WorkflowRun

from ._registry import Registry, collect
from ._server import EmbeddedServer, find_binary
from ._temporal import PLUGIN_WORKFLOWS, SCHEDULED_CALL_WORKFLOW, EngineInterceptor, plugin_activity

if TYPE_CHECKING:
    from botcriptofy import Kernel
    from botcriptofy import Schedule as PluginSchedule

    from ._metrics import WorkflowMetrics
    from ._settings import WorkflowsSettings

log = logging.getLogger("botcriptofy.workflows")

OWNER_MEMO = "botcriptofy_plugin"
PAUSED_NOTE = "botcriptofy: plugin disabled"
OVERLAP = {
    "skip": ScheduleOverlapPolicy.SKIP,
    "buffer_one": ScheduleOverlapPolicy.BUFFER_ONE,
    "buffer_all": ScheduleOverlapPolicy.BUFFER_ALL,
    "cancel_other": ScheduleOverlapPolicy.CANCEL_OTHER,
    "terminate_other": ScheduleOverlapPolicy.TERMINATE_OTHER,
    "allow_all": ScheduleOverlapPolicy.ALLOW_ALL,
}
STATUS = {
    WorkflowExecutionStatus.RUNNING: "running",
    WorkflowExecutionStatus.COMPLETED: "completed",
    WorkflowExecutionStatus.FAILED: "failed",
    WorkflowExecutionStatus.CANCELED: "canceled",
    WorkflowExecutionStatus.TERMINATED: "terminated",
    WorkflowExecutionStatus.CONTINUED_AS_NEW: "continued_as_new",
    WorkflowExecutionStatus.TIMED_OUT: "timed_out",
}


def not_found(error: RPCError) -> bool:
    return error.status == RPCStatusCode.NOT_FOUND


def tls_config(settings: WorkflowsSettings) -> bool | TLSConfig:
    """TLS for external mode: on with an API key, a client certificate or ``tls``; files read here."""
    if settings.mode != "external" or not (settings.tls or settings.api_key.get_secret_value() or settings.tls_client_cert_file):
        return False

    def read(path: str) -> bytes | None:
        return Path(path).read_bytes() if path else None

    return TLSConfig(
        server_root_ca_cert=read(settings.tls_server_ca_file),
        client_cert=read(settings.tls_client_cert_file),
        client_private_key=read(settings.tls_client_key_file),
    )


CORE_LOGGER = "botcriptofy.workflows.core"


@functools.cache
def core_runtime() -> Runtime:
    """This process's Temporal runtime, its Rust core's log records forwarded to the ``botcriptofy.workflows.core`` logger.

    The SDK's default runtime writes the core's warnings to the process's stdout, with terminal colour
    codes, outside the service's logging (its format, its handlers, the observability plugin's JSON
    lines), and into the output of a process whose stdout is a protocol. Forwarded, they are ordinary
    log records. One runtime per process: each holds its own thread pool.
    """
    telemetry = TelemetryConfig(
        logging=LoggingConfig(
            filter=TelemetryFilter(core_level="WARN", other_level="ERROR"),
            forwarding=LogForwardingConfig(logger=logging.getLogger(CORE_LOGGER)),
        )
    )
    return Runtime(telemetry=telemetry)


async def connect(address: str, settings: WorkflowsSettings) -> Client:
    """Connect to the Temporal frontend at ``address`` as the settings say (TLS, API key)."""
    return await Client.connect(
        address,
        runtime=core_runtime(),
        namespace=settings.namespace,
        tls=await asyncio.to_thread(tls_config, settings),
        api_key=settings.api_key.get_secret_value() or None,
        identity=f"botcriptofy@{os.getpid()}",
    )


async def answers(address: str) -> bool:
    """Return whether a Temporal frontend answers its health check at ``address``."""
    try:
        client = await asyncio.wait_for(Client.connect(address, runtime=core_runtime()), 2)
        return bool(await asyncio.wait_for(client.service_client.check_health(), 2))
    except Exception:
        return False


@dataclass
class _Running:
    worker: Worker
    task: asyncio.Task[None]
    plugin: Any


def describe_run(description: Any) -> WorkflowRun:
    return WorkflowRun(
        id=description.id,
        workflow=description.workflow_type,
        status=STATUS.get(description.status, str(description.status)),
        started_at=description.start_time,
        closed_at=description.close_time,
        task_queue=description.task_queue,
        run_id=description.run_id,
    )


class Engine:
    """The Temporal client and workers of one running workflows plugin; also the ``workflow_engine``."""

    def __init__(self, kernel: Kernel, settings: WorkflowsSettings, metrics: WorkflowMetrics, *, client: Client | None = None) -> None:
        self.kernel = kernel
        self.settings = settings
        self.metrics = metrics
        self.client: Client = client  # type: ignore[assignment]
        self._given_client = client is not None
        self.server: EmbeddedServer | None = None
        self.registry = Registry()
        self.workers: dict[str, _Running] = {}
        self.schedule_fingerprints: dict[str, str] = {}
        self._watcher: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._activity = plugin_activity(self)
        self._interceptor = EngineInterceptor(self, metrics.workflow_failures, metrics.activity_failures)
        self.extra_workflows: list[type] = []
        self.extra_activities: list[Any] = []

    # -- settings-derived ---------------------------------------------------------------------

    @property
    def retry(self) -> dict[str, Any]:
        return {"initial": self.settings.retry_initial_interval, "maximum": self.settings.retry_maximum_interval}

    def queue(self, plugin: str) -> str:
        return f"{self.settings.task_queue_prefix}.{plugin}"

    # -- start and stop ---------------------------------------------------------------------

    async def start(self) -> None:
        if not self._given_client:
            address = self.settings.address
            if self.settings.mode == "embedded":
                self.server = EmbeddedServer(
                    self.kernel.state_dir / self.settings.server_directory,
                    binary=find_binary(self.settings.server_binary),
                    port=self.settings.server_port,
                    namespace=self.settings.namespace,
                    startup_timeout=self.settings.startup_timeout,
                    healthy=answers,
                )
                self.server.on_restart = self.metrics.server_restarts.inc
                address = await self.server.start()
            self.client = await asyncio.wait_for(connect(address, self.settings), self.settings.startup_timeout)
        await self.reconcile(self.kernel)
        self._watcher = asyncio.create_task(self._watch(), name="botcriptofy-workflows-watcher")

    async def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)
        async with self._lock:
            await asyncio.gather(*(self._stop_worker(name) for name in list(self.workers)), return_exceptions=True)
        if self.server is not None:
            await self.server.stop()

    async def health(self) -> bool:
        return bool(await asyncio.wait_for(self.client.service_client.check_health(), 2))

    # -- following the kernel's generations -------------------------------------------------

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.settings.watch_interval)
            current = self.kernel.current()
            if current.generation == self.registry.generation or "workflows" not in current.plugins:
                continue
            try:
                await self.reconcile(current)
            except Exception:
                log.exception("could not follow generation %s; trying again", current.generation)

    async def reconcile(self, kernel: Kernel) -> None:
        """Start and stop workers and pause, resume or update schedules to match ``kernel``'s plugins."""
        async with self._lock:
            previous = self.registry
            registry = await collect(kernel)
            wanted = registry.owners() | {"workflows"}
            # Stop the workers of departed plugins before their names leave the registry, so no
            # task of theirs is picked up and failed in between.
            for name in sorted(set(self.workers) - wanted):
                await self._stop_worker(name)
            self.registry = registry
            for name in sorted(wanted):
                running = self.workers.get(name)
                plugin = registry.plugins.get(name)
                if running is None:
                    self._start_worker(name, plugin)
                elif running.plugin is not plugin:
                    # New code or a restarted plugin: the new worker takes tasks before the old one stops.
                    old = self.workers.pop(name)
                    self._start_worker(name, plugin)
                    await self._shutdown(old)
            await self._reconcile_schedules(previous, registry)

    def _start_worker(self, name: str, plugin: Any) -> None:
        workflows: list[type] = list(PLUGIN_WORKFLOWS)
        activities: list[Any] = [self._activity]
        if name == "workflows":
            workflows += self.extra_workflows
            activities += self.extra_activities
        worker = Worker(
            self.client,
            task_queue=self.queue(name),
            workflows=workflows,
            activities=activities,
            interceptors=[self._interceptor],
            graceful_shutdown_timeout=timedelta(seconds=self.settings.graceful_shutdown),
        )
        task = asyncio.create_task(worker.run(), name=f"botcriptofy-workflows-worker-{name}")
        self.workers[name] = _Running(worker, task, plugin)
        log.info("worker started on task queue %s", self.queue(name))

    async def _shutdown(self, running: _Running) -> None:
        with contextlib.suppress(Exception):
            await running.worker.shutdown()
        await asyncio.gather(running.task, return_exceptions=True)

    async def _stop_worker(self, name: str) -> None:
        running = self.workers.pop(name, None)
        if running is not None:
            await self._shutdown(running)
            log.info("worker stopped on task queue %s", self.queue(name))

    # -- schedules --------------------------------------------------------------------------

    def _schedule(self, schedule_id: str, plugin: str, declared: PluginSchedule, *, paused: bool = False, note: str = "") -> Schedule:
        if declared.cron is not None:
            spec = ScheduleSpec(cron_expressions=[declared.cron], time_zone_name=declared.time_zone)
        else:
            assert declared.interval is not None
            spec = ScheduleSpec(
                intervals=[ScheduleIntervalSpec(every=timedelta(seconds=declared.interval))], time_zone_name=declared.time_zone
            )
        call = {
            "schedule": schedule_id,
            "timeout": declared.timeout,
            "retry": {**self.retry, "attempts": self.settings.schedule_max_attempts},
            "payload": dict(declared.payload),
        }
        return Schedule(
            action=ScheduleActionStartWorkflow(SCHEDULED_CALL_WORKFLOW, call, id=f"schedule.{schedule_id}", task_queue=self.queue(plugin)),
            spec=spec,
            policy=SchedulePolicy(overlap=OVERLAP[declared.overlap], catchup_window=timedelta(seconds=declared.catchup_window)),
            state=ScheduleState(note=note or declared.description, paused=paused),
        )

    def _fingerprint(self, plugin: str, declared: PluginSchedule) -> str:
        shape = {
            "plugin": plugin,
            "cron": declared.cron,
            "interval": declared.interval,
            "tz": declared.time_zone,
            "overlap": declared.overlap,
            "catchup": declared.catchup_window,
            "payload": dict(declared.payload),
            "timeout": declared.timeout,
            "attempts": self.settings.schedule_max_attempts,
            "retry": self.retry,
        }
        return hashlib.sha256(json.dumps(shape, sort_keys=True, default=str).encode()).hexdigest()

    async def _reconcile_schedules(self, previous: Registry, registry: Registry) -> None:
        if not registry.schedules and not previous.schedules and previous.generation:
            return
        if not previous.generation:
            await self._pause_orphans(registry)
        for schedule_id, (plugin, declared) in sorted(registry.schedules.items()):
            fingerprint = self._fingerprint(plugin, declared)
            try:
                if self.schedule_fingerprints.get(schedule_id) != fingerprint:
                    await self._upsert(schedule_id, plugin, declared)
                    self.schedule_fingerprints[schedule_id] = fingerprint
                if schedule_id not in previous.schedules:
                    await self._resume(schedule_id, plugin)
            except Exception:
                log.exception("schedule %s could not be created, updated or resumed; trying again with the next generation", schedule_id)
                self.schedule_fingerprints.pop(schedule_id, None)
        for schedule_id in sorted(set(previous.schedules) - set(registry.schedules)):
            await self._pause(schedule_id, previous.schedules[schedule_id][0])

    async def _pause_orphans(self, registry: Registry) -> None:
        """At start, pause schedules left by plugins that are no longer enabled."""
        try:
            async for listed in await self.client.list_schedules():
                if listed.id in registry.schedules:
                    continue
                owner = (await listed.memo()).get(OWNER_MEMO)
                paused = listed.schedule is not None and listed.schedule.state.paused
                if owner and not paused:
                    await self._pause(listed.id, str(owner))
        except RPCError as error:
            if error.status != RPCStatusCode.UNIMPLEMENTED:
                log.warning("could not list schedules to pause those of disabled plugins: %s", error)

    async def _pause(self, schedule_id: str, plugin: str) -> None:
        handle = self.client.get_schedule_handle(schedule_id)
        try:
            if (await handle.describe()).schedule.state.paused:
                return  # already paused (by an operator, whose note must stay so re-enabling keeps it paused)
            await handle.pause(note=f"{PAUSED_NOTE}: {plugin}")
            log.info("schedule %s paused: plugin %s is disabled", schedule_id, plugin)
        except RPCError as error:
            if not not_found(error):
                log.warning("could not pause schedule %s: %s", schedule_id, error)

    async def _upsert(self, schedule_id: str, plugin: str, declared: PluginSchedule) -> None:
        desired = self._schedule(schedule_id, plugin, declared)
        try:
            await self.client.create_schedule(schedule_id, desired, memo={OWNER_MEMO: plugin})
            log.info("schedule %s created", schedule_id)
            return
        except ScheduleAlreadyRunningError:
            pass

        def keep_state(input: ScheduleUpdateInput) -> ScheduleUpdate:
            # The definition changes; whether it is paused, and why, stays as it is.
            state = input.description.schedule.state
            desired.state = ScheduleState(note=state.note, paused=state.paused)
            return ScheduleUpdate(schedule=desired)

        await self.client.get_schedule_handle(schedule_id).update(keep_state)
        log.info("schedule %s updated", schedule_id)

    async def _resume(self, schedule_id: str, plugin: str) -> None:
        """Resume a schedule paused because its plugin was disabled; an operator's pause stays."""
        handle = self.client.get_schedule_handle(schedule_id)
        state = (await handle.describe()).schedule.state
        if state.paused and (state.note or "").startswith(PAUSED_NOTE):
            await handle.unpause(note=f"botcriptofy: plugin {plugin} enabled")
            log.info("schedule %s resumed: plugin %s is enabled", schedule_id, plugin)

    # -- the workflow_engine contract -----------------------------------------------------------

    async def start_workflow(self, workflow: str, *, id: str, input: Mapping[str, Any] | None = None) -> WorkflowRun:
        found = self.registry.workflows.get(workflow)
        if found is None:
            raise ProblemError(
                422,
                "Unknown workflow",
                f"No enabled plugin registers the workflow '{workflow}'.",
                errors=[{"field": "workflow", "message": "unknown"}],
            )
        handle = await self.client.start_workflow(
            workflow,
            dict(input or {}),
            id=id,
            task_queue=self.queue(found[0]),
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        )
        return describe_run(await handle.describe())

    async def signal(self, workflow_id: str, signal: str, payload: Mapping[str, Any] | None = None) -> bool:
        try:
            await self.client.get_workflow_handle(workflow_id).signal(signal, dict(payload or {}))
        except RPCError as error:
            if not_found(error):
                return False
            raise
        return True

    async def cancel(self, workflow_id: str) -> bool:
        handle = self.client.get_workflow_handle(workflow_id)
        try:
            description = await handle.describe()
            if description.status != WorkflowExecutionStatus.RUNNING:
                return False
            await handle.cancel()
        except RPCError as error:
            if not_found(error):
                return False
            raise
        return True

    async def describe(self, workflow_id: str) -> WorkflowRun | None:
        try:
            return describe_run(await self.client.get_workflow_handle(workflow_id).describe())
        except RPCError as error:
            if not_found(error):
                return None
            raise

    async def wait(self, workflow_id: str) -> Any:
        try:
            return await self.client.get_workflow_handle(workflow_id).result()
        except WorkflowFailureError as failure:
            cause = failure.cause
            reason = cause.message if isinstance(cause, TemporalFailure) else str(failure)
            raise RuntimeError(f"workflow {workflow_id} did not complete: {reason}") from failure


class EngineFacade:
    """What ``workflow_engine`` returns: the :class:`botcriptofy.Workflows` protocol over an :class:`Engine`."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    async def start(self, workflow: str, *, id: str, input: Mapping[str, Any] | None = None) -> WorkflowRun:
        return await self._engine.start_workflow(workflow, id=id, input=input)

    async def signal(self, workflow_id: str, signal: str, payload: Mapping[str, Any] | None = None) -> bool:
        return await self._engine.signal(workflow_id, signal, payload)

    async def cancel(self, workflow_id: str) -> bool:
        return await self._engine.cancel(workflow_id)

    async def describe(self, workflow_id: str) -> WorkflowRun | None:
        return await self._engine.describe(workflow_id)

    async def wait(self, workflow_id: str) -> Any:
        return await self._engine.wait(workflow_id)
