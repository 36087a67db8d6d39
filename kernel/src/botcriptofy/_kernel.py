"""Kernel generations and the runtime that builds, swaps and retires them.

A *generation* is one applied configuration: its validated settings, its enabled plugins, their
hooks and the Starlette app built from them. The runtime serves every new request on the current
generation; a settings change builds the next generation beside it, swaps it in with one
assignment, and stops the plugins it no longer needs once the old generation's last request is done.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pluggy
from prometheus_client import CollectorRegistry
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.routing import BaseRoute
from starlette.routing import Route as StarletteRoute
from starlette.types import Receive, Scope, Send

from . import _builtin
from ._cache import LocalCache
from ._errors import ConfigError, PluginError, ProblemError
from ._events import EventBus, EventHandler, Outbox
from ._history import ConfigHistory
from ._http import KERNEL_SCOPE_KEY, IndexedRouter, handle_error
from ._manager import PluginInfo, discover, inspect_plugin, new_plugin_manager
from ._settings import RESCAN_MARKER, KernelSettings, RawConfig, ValidConfig, load, mask_secrets, validate
from ._stash import Stash
from ._types import Cache, Database, Entitlements, Middleware, Notification, QuotaDecision, RateLimiter
from ._util import await_me_maybe
from ._version import __version__

log = logging.getLogger("botcriptofy")

BUILTIN_PLUGIN = "core"


class Kernel:
    """One generation of the service, as hooks and routes see it.

    Hooks receive it as ``kernel``; a route reaches the generation serving it with
    :func:`botcriptofy.kernel_of`. Plugins keep their state in :attr:`stash`.
    """

    def __init__(
        self,
        runtime: Runtime,
        number: int,
        config: ValidConfig,
        plugins: dict[str, PluginInfo],
        manager: pluggy.PluginManager,
        stash: Stash,
    ) -> None:
        self.runtime = runtime
        self.generation = number
        self.config = config
        self.plugins = plugins
        self.manager = manager
        self.hook = manager.hook
        self.stash = stash
        self.events = EventBus(self, ())
        self.app: Starlette | None = None
        self.config_version: int | None = None
        self.inflight = 0
        self.retired = False
        self.drained = asyncio.Event()
        self._providers: dict[str, Any] = {}
        self._openapi: dict[str, Any] | None = None

    def __repr__(self) -> str:
        return f"<Kernel generation={self.generation} plugins={sorted(self.plugins)}>"

    # -- settings -------------------------------------------------------------------------

    @property
    def settings(self) -> dict[str, Any]:
        """The effective settings of this generation, every section, as plain data."""
        return self.config.raw.data

    @property
    def kernel_settings(self) -> KernelSettings:
        return self.config.kernel

    @property
    def env(self) -> str:
        return self.config.raw.env

    @property
    def version(self) -> str:
        return __version__

    @property
    def state_dir(self) -> Path:
        return Path(self.config.kernel.state_dir)

    def settings_for(self, plugin: str) -> Any:
        """Return the plugin's validated settings model (None when it takes no settings)."""
        return self.config.plugins.get(plugin)

    def current(self) -> Kernel:
        """Return the generation serving new requests now (background tasks should use it)."""
        return self.runtime.current or self

    @property
    def metrics(self) -> CollectorRegistry:
        """The process's Prometheus registry."""
        return self.runtime.metrics

    # -- providers ------------------------------------------------------------------------

    def _provide(self, hook_name: str) -> Any:
        if hook_name not in self._providers:
            self._providers[hook_name] = getattr(self.hook, hook_name)(kernel=self)
        return self._providers[hook_name]

    def database(self) -> Database:
        """Return the database provided by the storage plugin."""
        found = self._provide("database")
        if found is None:
            raise RuntimeError("no plugin provides the database: enable the storage plugin (remove it from plugins.disabled)")
        return found  # type: ignore[no-any-return]

    def has_database(self) -> bool:
        return self._provide("database") is not None

    def outbox(self) -> Outbox | None:
        return self._provide("event_outbox")  # type: ignore[no-any-return]

    def cache(self) -> Cache:
        """Return the shared cache: the cache plugin's, or an in-process fallback."""
        return self._provide("cache_backend") or self.runtime.local_cache  # type: ignore[no-any-return]

    def rate_limiter(self) -> RateLimiter | None:
        return self._provide("rate_limiter")  # type: ignore[no-any-return]

    async def entitlements(self, tenant_id: str) -> Entitlements | None:
        return await await_me_maybe(self.hook.entitlements_for(kernel=self, tenant_id=tenant_id))  # type: ignore[no-any-return]

    async def consume_quota(self, tenant_id: str, quota: str, amount: int = 1) -> QuotaDecision | None:
        """Consume a quota; raise a 403 problem naming the quota and the plan that lifts it when refused."""
        decision = await await_me_maybe(self.hook.consume_quota(kernel=self, tenant_id=tenant_id, quota=quota, amount=amount))
        if decision is not None and not decision.allowed:
            lift = f" The {decision.upgrade_to} plan lifts it." if decision.upgrade_to else ""
            raise ProblemError(
                403,
                "Quota exceeded",
                f"The '{decision.quota}' quota of the {decision.plan} plan is used up ({decision.used}/{decision.limit}).{lift}",
                type="https://botcriptofy.dev/problems/quota-exceeded",
                quota=decision.quota,
                plan=decision.plan,
                upgrade_to=decision.upgrade_to,
                used=decision.used,
                limit=decision.limit,
            )
        return decision  # type: ignore[no-any-return]

    # -- calling hooks --------------------------------------------------------------------

    async def broadcast(self, hook_name: str, **kwargs: Any) -> dict[str, Any]:
        """Call every implementation of a hook in isolation; return each plugin's result.

        A failing implementation is logged with ``plugin`` and ``hook`` and left out of the result.
        """
        results: dict[str, Any] = {}
        for impl in reversed(getattr(self.hook, hook_name).get_hookimpls()):
            try:
                results[impl.plugin_name] = await await_me_maybe(impl.function(**{name: kwargs[name] for name in impl.argnames}))
            except Exception:
                log.exception(
                    "plugin '%s', hook '%s' failed", impl.plugin_name, hook_name, extra={"plugin": impl.plugin_name, "hook": hook_name}
                )
        return results

    async def call_plugin(self, plugin: str, hook_name: str, **kwargs: Any) -> Any:
        """Call one plugin's implementation of a hook; errors become :class:`PluginError`."""
        for impl in getattr(self.hook, hook_name).get_hookimpls():
            if impl.plugin_name == plugin:
                try:
                    return await await_me_maybe(impl.function(**{name: kwargs[name] for name in impl.argnames}))
                except Exception as error:
                    raise PluginError(
                        plugin,
                        f"raised {error!r}",
                        hook=hook_name,
                        fix=f'see the traceback above; disable the plugin with plugins.disabled = ["{plugin}"] meanwhile.',
                    ) from error
        return None

    async def notify(self, notification: Notification) -> None:
        """Send a notification through every channel plugin."""
        await self.broadcast("send_notification", kernel=self, notification=notification)

    def openapi(self) -> dict[str, Any]:
        if self._openapi is None:
            from ._http import openapi_document

            assert self.app is not None
            self._openapi = openapi_document(self.app.routes, title=self.config.kernel.title, version=__version__)
        return self._openapi


@dataclass
class Plan:
    """What a configuration change does to the plugins."""

    starting: list[str] = field(default_factory=list)
    stopping: list[str] = field(default_factory=list)
    restarting: list[str] = field(default_factory=list)
    reconfiguring: list[tuple[str, BaseModel, BaseModel, frozenset[str]]] = field(default_factory=list)

    def describe(self) -> dict[str, list[str]]:
        return {
            "started": self.starting,
            "stopped": self.stopping,
            "restarted": self.restarting,
            "reconfigured": [name for name, *_ in self.reconfiguring],
        }


@dataclass
class ApplyResult:
    """The outcome of applying a configuration."""

    applied: bool
    version: int | None = None
    generation: int | None = None
    changes: dict[str, list[str]] = field(default_factory=dict)
    error: str | None = None


class Runtime:
    """The process-wide ASGI application: serves the current generation and applies configuration changes."""

    def __init__(
        self,
        settings_dir: str | os.PathLike[str] | None = None,
        *,
        env: str | None = None,
        plugins: Mapping[str, Any] | None = None,
        discover: bool = True,
        watch: bool = True,
    ) -> None:
        directory = settings_dir or os.environ.get("BOTCRIPTOFY_SETTINGS_DIR") or "settings"
        self.settings_dir = Path(directory).resolve()
        self.env = env
        self.extra_plugins = dict(plugins or {})
        self.discover_installed = discover
        self.watch = watch
        self.plugins: dict[str, PluginInfo] = {}
        self.current: Kernel | None = None
        self.metrics = CollectorRegistry(auto_describe=True)
        self.local_cache = LocalCache()
        self.history: ConfigHistory | None = None
        self.last_error: str | None = None
        self._generations = 0
        self._collectors: dict[str, list[Any]] = {}
        self._lock = asyncio.Lock()
        self._retiring: set[asyncio.Task[None]] = set()
        self._watcher: asyncio.Task[None] | None = None
        self._stop_watching = asyncio.Event()
        self._started = False

    # -- ASGI -----------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        kernel = self.current
        if kernel is None or kernel.app is None:
            raise RuntimeError("the runtime has not started; run it under an ASGI server with lifespan enabled")
        kernel.inflight += 1
        scope[KERNEL_SCOPE_KEY] = kernel
        try:
            await kernel.app(scope, receive, send)
        finally:
            kernel.inflight -= 1
            if kernel.retired and kernel.inflight == 0:
                kernel.drained.set()

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        await receive()
        try:
            await self.start()
        except Exception as error:
            log.error("start-up failed: %s", error)
            await send({"type": "lifespan.startup.failed", "message": str(error)})
            return
        await send({"type": "lifespan.startup.complete"})
        await receive()
        await self.stop()
        await send({"type": "lifespan.shutdown.complete"})

    # -- start and stop -------------------------------------------------------------------

    def scan(self) -> dict[str, PluginInfo]:
        """Find the plugins: the kernel's built-in one, installed distributions, and those given in code."""
        found = {BUILTIN_PLUGIN: inspect_plugin(BUILTIN_PLUGIN, _builtin, version=__version__, builtin=True)}
        if self.discover_installed:
            found.update(discover())
        for name, plugin in self.extra_plugins.items():
            found[name] = plugin if isinstance(plugin, PluginInfo) else inspect_plugin(name, plugin)
        return found

    async def start(self, *, source: str = "startup") -> Kernel:
        """Load and validate the settings, start every enabled plugin, and start watching the settings."""
        if self._started:
            assert self.current is not None
            return self.current
        self.plugins = self.scan()
        raw = load(self.settings_dir, self.env)
        kernel, _ = await self._build(raw, previous=None, boot=True)
        self.current = kernel
        self.history = ConfigHistory(kernel.state_dir / "config-history.sqlite3")
        try:
            kernel.config_version = await self._record(kernel, source=source)
        except Exception:
            log.exception("serving without a configuration history entry: %s could not be written", self.history.path)
        self._started = True
        if self.watch:
            self._stop_watching.clear()
            self._watcher = asyncio.create_task(self._watch_settings(), name="botcriptofy-settings-watcher")
            # Let the task reach its first await: by then the file watch is registered, so a change
            # saved right after start() returns is not missed.
            await asyncio.sleep(0)
        log.info(
            "serving configuration version %s (generation %s) with plugins: %s",
            kernel.config_version,
            kernel.generation,
            ", ".join(sorted(kernel.plugins)),
        )
        return kernel

    async def stop(self) -> None:
        """Stop watching, let retiring generations finish, and stop every plugin."""
        if not self._started:
            return
        self._started = False
        self._stop_watching.set()
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)
            self._watcher = None
        if self._retiring:
            await asyncio.gather(*self._retiring, return_exceptions=True)
        kernel = self.current
        if kernel is not None:
            await self._stop_plugins(kernel, list(kernel.plugins))
            for name in list(self._collectors):
                self._unregister_metrics(name)

    # -- applying configuration -----------------------------------------------------------

    def validate(self, raw: RawConfig, plugins: Mapping[str, PluginInfo] | None = None) -> ValidConfig:
        """Validate a loaded configuration against the known plugins; raise :class:`ConfigError`."""
        plugins = self.plugins if plugins is None else plugins
        schemas = {name: info.schema for name, info in plugins.items()}
        usable = {name for name, info in plugins.items() if info.error is None}
        config = validate(raw, schemas, installed=set(plugins), enabled=usable)
        builtin = sorted(name for name in config.disabled if plugins[name].builtin)
        if builtin:
            raise ConfigError(
                f"the kernel's built-in plugin '{builtin[0]}' cannot be disabled",
                file=raw.locate("plugins.disabled"),
                key="plugins.disabled",
            )
        return config

    def check_files(self, files: Mapping[str, str]) -> ValidConfig:
        """Validate settings files as they would be after replacing ``files``, without applying them."""
        with tempfile.TemporaryDirectory(prefix="botcriptofy-check-") as scratch:
            for path in self.settings_dir.glob("*.toml"):
                shutil.copy2(path, scratch)
            hidden = self.settings_dir / ".secrets.toml"
            if hidden.exists():
                shutil.copy2(hidden, scratch)
            for name, text in files.items():
                if "/" in name or name.startswith(".") or not name.endswith(".toml"):
                    raise ConfigError("only settings files (*.toml) in the settings directory can be written", file=name)
                (Path(scratch) / name).write_text(text, encoding="utf-8")
            raw = load(Path(scratch), self.env)
            config = self.validate(raw)
        return ValidConfig(
            raw=RawConfig(self.settings_dir, raw.env, raw.data, raw.files),
            kernel=config.kernel,
            disabled=config.disabled,
            plugins=config.plugins,
        )

    async def reload(self, *, source: str = "file", rescan: bool = False, note: str = "") -> ApplyResult:
        """Load the settings again and apply them if they changed; an invalid change is refused and logged."""
        async with self._lock:
            return await self._apply(source=source, rescan=rescan, note=note)

    async def rescan(self, *, source: str = "api") -> ApplyResult:
        """Look for newly installed plugins and apply the configuration with them."""
        return await self.reload(source=source, rescan=True)

    async def rollback(self, version: int, *, source: str = "api") -> ApplyResult:
        """Write the settings files of an earlier version back and apply them."""
        assert self.history is not None
        async with self._lock:
            target = await asyncio.to_thread(self.history.get, version)
            if target is None:
                raise ConfigError(
                    f"there is no configuration version {version}; list them with `botcriptofy config history`", key="version"
                )
            self.check_files(target.files)
            write_settings_files(self.settings_dir, target.files)
            return await self._apply(source=source, note=f"rollback to version {version}")

    async def _apply(self, *, source: str, rescan: bool = False, note: str = "") -> ApplyResult:
        previous = self.current
        assert previous is not None
        known = self.plugins
        try:
            if rescan:
                self.plugins = self.scan()
            raw = load(self.settings_dir, self.env)
            unchanged = raw.fingerprint == previous.config.raw.fingerprint and raw.digest == previous.config.raw.digest
            if unchanged and self.plugins == known and not note:
                return ApplyResult(applied=False, version=previous.config_version, generation=previous.generation)
            kernel, plan = await self._build(raw, previous=previous, boot=False)
        except (ConfigError, PluginError) as error:
            self.plugins = known
            self.last_error = str(error)
            log.error("configuration refused, still serving version %s: %s", previous.config_version, error)
            return ApplyResult(applied=False, version=previous.config_version, generation=previous.generation, error=str(error))
        self.current = kernel
        self.last_error = None
        self._retire(previous, [*plan.stopping, *plan.restarting])
        try:
            kernel.config_version = await self._record(kernel, source=source, note=note)
        except Exception:
            log.exception("configuration applied (generation %s) but its history entry could not be written", kernel.generation)
        changes = plan.describe()
        log.info(
            "applied configuration version %s (generation %s, source %s): %s",
            kernel.config_version,
            kernel.generation,
            source,
            "; ".join(f"{k} {', '.join(v)}" for k, v in changes.items() if v) or "settings only",
        )
        return ApplyResult(applied=True, version=kernel.config_version, generation=kernel.generation, changes=changes)

    async def _record(self, kernel: Kernel, *, source: str, note: str = "") -> int:
        assert self.history is not None
        raw = kernel.config.raw
        return await asyncio.to_thread(
            self.history.record, digest=raw.digest, files=raw.files, settings=mask_secrets(raw.data), source=source, note=note
        )

    async def _build(self, raw: RawConfig, *, previous: Kernel | None, boot: bool) -> tuple[Kernel, Plan]:
        while True:
            config = self.validate(raw)
            active = {
                name: info for name, info in self.plugins.items() if info.error is None and (info.builtin or name not in config.disabled)
            }
            manager = new_plugin_manager()
            for name, info in active.items():
                manager.register(info.plugin, name=name)
            kernel = Kernel(self, self._generations + 1, config, active, manager, previous.stash.copy() if previous else Stash())
            plan = self._plan(previous, kernel)
            try:
                await self._start_plugins(kernel, plan)
                try:
                    await self._assemble(kernel)
                except PluginError:
                    await self._stop_plugins(kernel, [*plan.starting, *plan.restarting])
                    raise
            except PluginError as error:
                if not boot or error.plugin not in self.plugins or self.plugins[error.plugin].builtin:
                    raise
                log.error("refused %s", error, extra={"plugin": error.plugin, "hook": error.hook})
                self.plugins[error.plugin] = self.plugins[error.plugin].refused(error)
                continue
            self._generations = kernel.generation
            return kernel, plan

    def _plan(self, previous: Kernel | None, kernel: Kernel) -> Plan:
        before = previous.plugins if previous is not None else {}
        plan = Plan(starting=[n for n in kernel.plugins if n not in before], stopping=[n for n in before if n not in kernel.plugins])
        assert previous is not None or not before
        for name in kernel.plugins.keys() & before.keys():
            assert previous is not None
            if kernel.plugins[name].plugin is not before[name].plugin:
                plan.restarting.append(name)
                continue
            old, new = previous.settings_for(name), kernel.settings_for(name)
            if old == new or old is None or new is None:
                continue
            changed = frozenset(key for key in type(new).model_fields if getattr(old, key) != getattr(new, key))
            if changed <= kernel.plugins[name].live_keys:
                plan.reconfiguring.append((name, old, new, changed))
            else:
                plan.restarting.append(name)
        plan.restarting.sort()
        return plan

    async def _start_plugins(self, kernel: Kernel, plan: Plan) -> None:
        starting = set(plan.starting) | set(plan.restarting)
        started: list[str] = []
        try:
            # pluggy calls the last implementation first: follow its order, so tryfirst/trylast order start-up.
            implementers = [impl.plugin_name for impl in reversed(kernel.hook.startup.get_hookimpls())]
            for name in implementers:
                if name in starting:
                    await kernel.call_plugin(name, "startup", kernel=kernel)
                    started.append(name)
            for name, old, new, changed in plan.reconfiguring:
                await kernel.call_plugin(name, "settings_changed", kernel=kernel, previous=old, current=new, changed=changed)
            for name in plan.starting:
                if name not in self._collectors:
                    self._register_metrics(kernel, name)
        except PluginError:
            await self._stop_plugins(kernel, started)
            raise

    async def _stop_plugins(self, kernel: Kernel, names: list[str]) -> None:
        wanted = set(names)
        for impl in kernel.hook.shutdown.get_hookimpls():
            if impl.plugin_name in wanted:
                try:
                    await kernel.call_plugin(impl.plugin_name, "shutdown", kernel=kernel)
                except PluginError as error:
                    log.error("%s", error, extra={"plugin": impl.plugin_name, "hook": "shutdown"})

    def _register_metrics(self, kernel: Kernel, name: str) -> None:
        collectors: list[Any] = []
        for impl in kernel.hook.register_metrics.get_hookimpls():
            if impl.plugin_name != name:
                continue
            try:
                contributed: Any = impl.function(**{arg: kernel for arg in impl.argnames}) or []
                for collector in contributed:
                    self.metrics.register(collector)
                    collectors.append(collector)
            except Exception:
                log.exception(
                    "plugin '%s', hook 'register_metrics': cannot register metrics",
                    name,
                    extra={"plugin": name, "hook": "register_metrics"},
                )
        self._collectors[name] = collectors

    def _unregister_metrics(self, name: str) -> None:
        for collector in self._collectors.pop(name, ()):
            with contextlib.suppress(KeyError):
                self.metrics.unregister(collector)

    async def _collect(self, kernel: Kernel, hook_name: str) -> list[tuple[str, Any]]:
        found: list[tuple[str, Any]] = []
        for impl in reversed(getattr(kernel.hook, hook_name).get_hookimpls()):
            result = await kernel.call_plugin(impl.plugin_name, hook_name, kernel=kernel)
            for item in result or ():
                found.append((impl.plugin_name, item))
        return found

    async def _assemble(self, kernel: Kernel) -> None:
        routes: list[BaseRoute] = []
        owners: dict[tuple[str, str], str] = {}
        for plugin, route in await self._collect(kernel, "register_routes"):
            if isinstance(route, StarletteRoute):
                for method in sorted(set(route.methods or ()) - {"HEAD"}):
                    owner = owners.setdefault((route.path, method), plugin)
                    if owner != plugin:
                        raise PluginError(
                            plugin,
                            f"route {method} {route.path} is already declared by plugin '{owner}'.",
                            hook="register_routes",
                            fix="change the path, or disable one of the two plugins.",
                        )
            routes.append(route)
        middleware = [item for _, item in await self._collect(kernel, "register_middleware")]
        middleware.sort(key=lambda item: item.priority if isinstance(item, Middleware) else 300)
        handlers: list[EventHandler] = []
        for plugin, handler in await self._collect(kernel, "register_event_handlers"):
            handlers.append(handler)
            if not isinstance(handler, EventHandler):
                raise PluginError(
                    plugin,
                    f"returned {type(handler).__name__}, not EventHandler",
                    hook="register_event_handlers",
                    fix="return a list of botcriptofy.EventHandler.",
                )
        app = Starlette(
            middleware=middleware,
            exception_handlers={Exception: handle_error, HTTPException: handle_error, ProblemError: handle_error},
        )
        app.router = IndexedRouter(routes)
        app.state.kernel = kernel
        kernel.app = app
        kernel.events = EventBus(kernel, handlers)

    def _retire(self, kernel: Kernel, stopping: list[str]) -> None:
        kernel.retired = True
        if kernel.inflight == 0:
            kernel.drained.set()
        task = asyncio.create_task(self._drain_and_stop(kernel, stopping))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def _drain_and_stop(self, kernel: Kernel, stopping: list[str]) -> None:
        try:
            await asyncio.wait_for(kernel.drained.wait(), timeout=kernel.kernel_settings.drain_timeout)
        except TimeoutError:
            log.warning(
                "generation %s still had %s request(s) after %.0f s; stopping its plugins anyway",
                kernel.generation,
                kernel.inflight,
                kernel.kernel_settings.drain_timeout,
            )
        await self._stop_plugins(kernel, stopping)
        current = self.current
        for name in stopping:
            if current is None or name not in current.plugins:
                self._unregister_metrics(name)

    # -- watching -------------------------------------------------------------------------

    async def _watch_settings(self) -> None:
        from watchfiles import awatch

        def relevant(_: object, path: str) -> bool:
            name = os.path.basename(path)
            return name.endswith(".toml") or name == RESCAN_MARKER

        while not self._stop_watching.is_set():
            try:
                async for changes in awatch(
                    self.settings_dir, watch_filter=relevant, debounce=60, step=20, stop_event=self._stop_watching, recursive=False
                ):
                    rescan = any(os.path.basename(path) == RESCAN_MARKER for _, path in changes)
                    await self.reload(source="file", rescan=rescan)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("settings watcher failed; restarting it")
                await asyncio.sleep(0.5)


def write_settings_files(directory: Path, files: Mapping[str, str]) -> None:
    """Replace the settings files with ``files`` atomically, one file at a time; remove those not listed."""
    for path in directory.glob("*.toml"):
        if not path.name.startswith(".") and path.name not in files:
            path.unlink()
    for name, text in files.items():
        fd, temporary = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(temporary, directory / name)


def request_rescan(directory: Path) -> None:
    """Ask every worker watching ``directory`` to look for newly installed plugins."""
    import time

    (directory / RESCAN_MARKER).write_text(f"{time.time()}\n")
