"""The runtime: the process-wide ASGI application that builds, swaps and retires kernel generations.

The runtime serves every new request on the current generation; a settings change builds the next
generation beside it, swaps it in with one assignment, and stops the plugins it no longer needs once
the old generation's last request is done. The kernel's built-in plugin is handed to it by the layer
above (:mod:`botcriptofy._app`), so this module never imports the built-in routes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib.metadata as metadata
import json
import logging
import os
import shutil
import socket
import sys
import tempfile
import time
import tomllib
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from pydantic import BaseModel
from starlette.exceptions import HTTPException
from starlette.routing import BaseRoute
from starlette.routing import Route as StarletteRoute
from starlette.types import Receive, Scope, Send

from ._cache import LocalCache
from ._errors import ConfigError, PluginError, ProblemError, ServiceUnavailable
from ._events import ConfigApplied, EventBus, EventHandler
from ._fleet import SHARED_FILES, ConfigStore, SharedVersion, shared_digest, shared_files
from ._history import ConfigHistory
from ._http import KERNEL_SCOPE_KEY, GenerationApp, IndexedRouter, handle_error
from ._kernel import Kernel
from ._manager import PluginInfo, discover, inspect_plugin, new_plugin_manager
from ._settings import (
    SETTINGS_FILES,
    RawConfig,
    ValidConfig,
    load,
    mask_secrets,
    refuse_dynamic,
    settings_file_name,
    validate,
)
from ._stash import Stash
from ._types import Middleware
from ._version import __version__

log = logging.getLogger("botcriptofy")

BUILTIN_PLUGIN = "core"
RESCAN_REQUEST = "request"
# A ConfigApplied refused by an unavailable dependency (the database of the outbox) is retried this long,
# with backoff, before it is given up (logged). reload(), rollback() and apply_files() wait for their event
# at most ANNOUNCE_WAIT seconds; stop() waits STOP_ANNOUNCE_WAIT, then cancels what is left.
ANNOUNCE_RETRY_FOR = 300.0
ANNOUNCE_WAIT = 5.0
STOP_ANNOUNCE_WAIT = 10.0


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
    refused: dict[str, str] = field(default_factory=dict)


class Runtime:
    """The process-wide ASGI application: serves the current generation and applies configuration changes.

    ``builtin`` is the kernel's built-in plugin (health, readiness, configuration admin); the public
    :class:`botcriptofy.Runtime` passes it. A runtime without one serves only the plugins it is given.
    """

    def __init__(
        self,
        settings_dir: str | os.PathLike[str] | None = None,
        *,
        env: str | None = None,
        plugins: Mapping[str, Any] | None = None,
        discover: bool = True,
        watch: bool = True,
        builtin: object | None = None,
    ) -> None:
        directory = settings_dir or os.environ.get("BOTCRIPTOFY_SETTINGS_DIR") or "settings"
        self.settings_dir = Path(directory).resolve()
        self.env = env
        self.extra_plugins = dict(plugins or {})
        self.discover_installed = discover
        self.watch = watch
        self.builtin = builtin
        # Start only these plugins (and the built-in one); the others are validated but treated as disabled.
        # The command line uses it to reach a fleet's store without starting every plugin.
        self.only: frozenset[str] | None = None
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
        self.start_failures: dict[str, str] = {}
        self._retry: asyncio.Task[None] | None = None
        self._worker_file: Path | None = None
        # Fleet mode: the shared configuration store a plugin provides (None: single-host mode).
        self.store: ConfigStore | None = None
        self.drift: str | None = None
        self.fleet_refused: dict[int, str] = {}
        self._drift_digest: str | None = None
        self._fleet_digest: str | None = None  # the last fleet version this host's files were written from
        self._applied_at: float | None = None
        self._fleet_task: asyncio.Task[None] | None = None
        self._fleet_wake = asyncio.Event()
        # The ConfigApplied announcements still being published, chained so that they keep the order of the versions.
        self._announcing: asyncio.Task[None] | None = None

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
        found: dict[str, PluginInfo] = {}
        if self.builtin is not None:
            found[BUILTIN_PLUGIN] = inspect_plugin(BUILTIN_PLUGIN, self.builtin, version=__version__, builtin=True)
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
        everyone = frozenset(name for name, info in self.plugins.items() if not info.builtin)
        kernel, _, refused = await self._build(raw, previous=None, refusable=everyone)
        self.current = kernel
        # Enabled in the settings but not started: this worker is not ready until they start.
        self.start_failures = refused
        self.history = ConfigHistory(kernel.state_dir / "config-history.sqlite3")
        try:
            kernel.config_version = await self._record(kernel, source=source)
        except Exception:
            log.exception("serving without a configuration history entry: %s could not be written", self.history.path)
        self._started = True
        self._stop_watching.clear()
        await self._find_store(kernel)
        if self.store is not None:
            await self._join_fleet(source)
        if self.start_failures:
            self._retry = asyncio.create_task(self._retry_failed_starts(), name="botcriptofy-start-retry")
        if self.watch:
            self._register_worker()
            self._watcher = asyncio.create_task(self._watch_settings(), name="botcriptofy-settings-watcher")
            self._fleet_task = asyncio.create_task(self._follow_fleet(), name="botcriptofy-fleet")
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
        if self._fleet_task is not None:
            self._fleet_task.cancel()
            await asyncio.gather(self._fleet_task, return_exceptions=True)
            self._fleet_task = None
        if self._retry is not None:
            self._retry.cancel()
            await asyncio.gather(self._retry, return_exceptions=True)
            self._retry = None
        if self._worker_file is not None:
            self._worker_file.unlink(missing_ok=True)
            self._worker_file = None
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)
            self._watcher = None
        if not await self.announced(timeout=STOP_ANNOUNCE_WAIT) and self._announcing is not None:
            log.warning("stopping before the last ConfigApplied event was published (given up after %s s)", STOP_ANNOUNCE_WAIT)
            self._announcing.cancel()
            await asyncio.gather(self._announcing, return_exceptions=True)
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
                try:
                    settings_file_name(name)
                except ValueError as error:
                    raise ConfigError(str(error), file=repr(name)) from None
                refuse_dynamic(text, file=name)
                (Path(scratch) / name).write_text(text, encoding="utf-8")
            try:
                raw = load(Path(scratch), self.env)
                config = self.validate(raw)
            except ConfigError as error:
                # Name the settings file the operator knows, not the scratch copy.
                file = error.file.replace(scratch, str(self.settings_dir)) if error.file else None
                raise ConfigError(error.reason, file=file, key=error.key) from None
        return ValidConfig(
            raw=RawConfig(self.settings_dir, raw.env, raw.data, raw.files),
            kernel=config.kernel,
            disabled=config.disabled,
            plugins=config.plugins,
        )

    async def reload(self, *, source: str = "file", rescan: bool = False, note: str = "") -> ApplyResult:
        """Load the settings again and apply them if they changed; an invalid change is refused and logged.

        Returns once the change's :class:`ConfigApplied` event is published, or after ``ANNOUNCE_WAIT``
        seconds while it is still being retried. The settings watcher does not wait for it: the next
        saved change is applied while the event is still on its way.
        """
        async with self._lock:
            result = await self._apply(source=source, rescan=rescan, note=note)
        await self.announced(timeout=ANNOUNCE_WAIT)
        return result

    async def announced(self, *, timeout: float | None = None) -> bool:  # noqa: ASYNC109
        """Wait until the :class:`ConfigApplied` events of the changes applied so far are published (or given up).

        With ``timeout``, wait at most that long; return whether none is pending any more.
        """
        try:
            async with asyncio.timeout(timeout):
                while self._announcing is not None and not self._announcing.done():
                    await asyncio.wait({self._announcing})  # never cancels the announcement itself
        except TimeoutError:
            return False
        return True

    def _announce(self, kernel: Kernel, *, source: str, note: str, changes: dict[str, list[str]]) -> None:
        """Publish ``kernel``'s ConfigApplied in the background, after the ones before it.

        Publishing goes through the outbox and the audit trail: under load it took up to 1.7 s, during
        which the next saved change waited. The generation serves as soon as it is swapped in.
        """
        before = self._announcing

        async def announce() -> None:
            if before is not None:
                await asyncio.gather(before, return_exceptions=True)
            await publish_config_applied(kernel, source=source, note=note, changes=changes, retry_for=ANNOUNCE_RETRY_FOR)

        self._announcing = asyncio.create_task(announce(), name=f"botcriptofy-config-applied-{kernel.generation}")

    async def rescan(self, *, source: str = "api") -> ApplyResult:
        """Look for newly installed plugins and apply the configuration with them."""
        return await self.reload(source=source, rescan=True)

    async def rollback(self, version: int, *, source: str = "api", actor: str = "") -> ApplyResult:
        """Write the settings files of an earlier version back and apply them (in fleet mode: publish them as a new version)."""
        if self.store is not None:
            shared = await self.store.get(version)
            if shared is None:
                raise ConfigError(
                    f"there is no configuration version {version}; list them with `botcriptofy config history`", key="version"
                )
            return await self.apply_files(shared.files, source=source, actor=actor, note=f"rollback to version {version}")
        assert self.history is not None
        async with self._lock:
            target = await asyncio.to_thread(self.history.get, version)
            if target is None:
                raise ConfigError(
                    f"there is no configuration version {version}; list them with `botcriptofy config history`", key="version"
                )
            self.check_files(target.files)
            write_settings_files(self.settings_dir, target.files)
            result = await self._apply(source=source, note=f"rollback to version {version}")
        await self.announced(timeout=ANNOUNCE_WAIT)
        return result

    async def apply_files(self, files: Mapping[str, str], *, source: str = "api", actor: str = "", note: str = "") -> ApplyResult:
        """Validate settings files once and apply them; raise :class:`ConfigError` with the reason when they are refused.

        Single-host mode writes them to this host's settings directory. Fleet mode publishes them as the
        fleet's next version (only the shared files: see :data:`SHARED_FILES`), which every host applies.
        """
        unknown = sorted(name for name in files if name not in SETTINGS_FILES)
        if unknown:
            raise ConfigError(f"is not a settings file the service reads ({', '.join(SETTINGS_FILES)})", file=unknown[0])
        if self.store is None:
            async with self._lock:
                self.check_files(files)
                before = {
                    name: (self.settings_dir / name).read_text(encoding="utf-8") for name in files if (self.settings_dir / name).exists()
                }
                for name, text in files.items():
                    _write_atomically(self.settings_dir / name, text)
                result = await self._apply(source=source, note=note)
                if result.error:  # valid, but refused while applying: the files go back to what runs
                    for name in files:
                        if name in before:
                            _write_atomically(self.settings_dir / name, before[name])
                        else:
                            (self.settings_dir / name).unlink(missing_ok=True)
            await self.announced(timeout=ANNOUNCE_WAIT)
            if result.error:
                raise ConfigError(result.error)
            return result
        names = sorted(files)
        if names != sorted(SHARED_FILES):
            local = [name for name in names if name not in SHARED_FILES]
            raise ConfigError(
                f"fleet versions carry {', '.join(SHARED_FILES)} (all of it, nothing else); "
                + (f"{local[0]} is this host's own file: edit it on the host" if local else "it is missing"),
                file=local[0] if local else SHARED_FILES[0],
            )
        store = self.store
        async with self._lock:
            self.check_files(files)  # the one validation, against every plugin schema of this host
            settings = {name: mask_secrets(tomllib.loads(text)) for name, text in files.items()}
            shared = await store.publish(files, settings=settings, source=source, actor=actor, note=note)
            log.info("configuration version %s accepted for the fleet (source %s%s)", shared.version, source, f", {actor}" if actor else "")
            result = await self._adopt(shared, source=source)
        self._fleet_wake.set()  # report the new state at once
        await self.announced(timeout=ANNOUNCE_WAIT)
        return result

    async def _apply(
        self,
        *,
        source: str,
        rescan: bool = False,
        note: str = "",
        retry: frozenset[str] = frozenset(),
        raw: RawConfig | None = None,
        fleet_version: int | None = None,
    ) -> ApplyResult:
        previous = self.current
        assert previous is not None
        known = self.plugins
        try:
            # Plugins that failed to start at boot are tried again by a rescan, and by the retry loop.
            refusable = set(self.start_failures) | set(retry)
            if rescan:
                self.plugins = self.scan()
                # New, upgraded or formerly refused plugins are tried; if one fails it is refused alone.
                refusable |= {
                    name
                    for name, info in self.plugins.items()
                    if name not in known or known[name].plugin is not info.plugin or known[name].error is not None
                }
            for name in retry:
                if name in self.plugins:
                    self.plugins[name] = replace(self.plugins[name], error=None)
            raw = raw if raw is not None else load(self.settings_dir, self.env)
            refuse_lost_files(previous.config.raw, raw)
            unchanged = raw.fingerprint == previous.config.raw.fingerprint and raw.digest == previous.config.raw.digest
            if unchanged and self.plugins == known and not note and not retry:
                return ApplyResult(applied=False, version=previous.config_version, generation=previous.generation)
            kernel, plan, refused = await self._build(raw, previous=previous, refusable=frozenset(refusable), refuse_settings=rescan)
        except (ConfigError, PluginError) as error:
            self.plugins = known
            self.last_error = str(error)
            log.error("configuration refused, still serving version %s: %s", previous.config_version, error)
            return ApplyResult(applied=False, version=previous.config_version, generation=previous.generation, error=str(error))
        for name in list(self.start_failures):
            if name in refused:
                self.start_failures[name] = refused[name]
            elif name in kernel.plugins or name in kernel.config.disabled or name not in self.plugins:
                del self.start_failures[name]
        if retry and set(kernel.plugins) == set(previous.plugins) and not plan.restarting:
            # Nothing more started: keep serving the generation we have.
            return ApplyResult(applied=False, version=previous.config_version, generation=previous.generation, refused=refused)
        self.current = kernel
        self.last_error = None
        self._retire(previous, [*plan.stopping, *plan.restarting])
        if fleet_version is not None:
            kernel.config_version = fleet_version
            self._applied_at = time.time()
        elif self.store is not None:
            kernel.config_version = previous.config_version  # this host's own files changed: the fleet's version is the same
        elif retry and raw.digest == previous.config.raw.digest and raw.fingerprint == previous.config.raw.fingerprint:
            kernel.config_version = previous.config_version  # the same configuration, with more of its plugins running
        else:
            try:
                kernel.config_version = await self._record(kernel, source=source, note=note)
            except Exception:
                log.exception("configuration applied (generation %s) but its history entry could not be written", kernel.generation)
        await self._find_store(kernel)
        self._update_worker_file()
        changes = plan.describe()
        self._announce(kernel, source=source, note=note, changes=changes)
        log.info(
            "applied configuration version %s (generation %s, source %s): %s",
            kernel.config_version,
            kernel.generation,
            source,
            "; ".join(f"{k} {', '.join(v)}" for k, v in changes.items() if v) or "settings only",
        )
        return ApplyResult(applied=True, version=kernel.config_version, generation=kernel.generation, changes=changes, refused=refused)

    async def _retry_failed_starts(self) -> None:
        """Start the plugins that failed to start at boot again, with a growing delay, until they start or are disabled."""
        assert self.current is not None
        delay = self.current.kernel_settings.start_retry_initial
        attempt = 0
        while self.start_failures and not self._stop_watching.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._stop_watching.wait()
                return
            attempt += 1
            names = frozenset(self.start_failures)
            async with self._lock:
                result = await self._apply(source="retry", retry=names)
            started = sorted(names - set(self.start_failures))
            if started:
                log.info("started %s on attempt %s (generation %s)", ", ".join(started), attempt, result.generation)
            if self.start_failures:
                log.warning(
                    "still not started after attempt %s, next try in %.0f s: %s",
                    attempt,
                    delay,
                    "; ".join(self.start_failures.values()),
                )
            assert self.current is not None
            settings = self.current.kernel_settings
            delay = min(delay * 2, settings.start_retry_max)

    def not_ready(self) -> dict[str, str]:
        """The plugins enabled in the settings that this worker has not started, with the reason."""
        return dict(self.start_failures)

    def refused_plugins(self) -> dict[str, str]:
        """Plugins refused (at scan, boot or rescan) that the settings do not disable, with the reason."""
        disabled = self.current.config.disabled if self.current is not None else frozenset()
        return {name: info.error for name, info in sorted(self.plugins.items()) if info.error and name not in disabled}

    # -- fleet mode -----------------------------------------------------------------------

    async def _find_store(self, kernel: Kernel) -> None:
        """Ask the plugins for a shared configuration store (the ``config_store`` hook); subscribe to a new one."""
        try:
            found: Any = kernel.hook.config_store(kernel=kernel)
            if asyncio.iscoroutine(found):
                found = await found
        except Exception:
            log.exception("hook 'config_store' failed; this host's files are its configuration until the next change")
            found = None
        if found is not None and found is not self.store:
            found.subscribe(self._fleet_wake.set)
            self._fleet_wake.set()  # reconcile and report at once
            log.info("fleet mode: the configuration is the shared store's current version")
        elif found is None and self.store is not None:
            log.warning("fleet mode off: no plugin provides a configuration store; this host's files are its configuration")
        self.store = found

    async def _join_fleet(self, source: str) -> None:
        """Apply the fleet's current version before serving (publish this host's files when the fleet has none)."""
        assert self.store is not None and self.current is not None
        try:
            current = await self.store.current()
            if current is None:
                files = shared_files(self.current.config.raw.files)
                settings = {name: mask_secrets(tomllib.loads(text)) for name, text in files.items()}
                current = await self.store.publish(
                    files, settings=settings, source=source, actor="", note="first version of the fleet", first=True
                )
            on_disk = shared_digest(self.current.config.raw.files)
            if on_disk != current.digest and any(old.digest == on_disk for old in await self.store.history(100)):
                self._fleet_digest = on_disk  # an older fleet version (the host was down): not drift, replace it
            async with self._lock:
                await self._adopt(current, source="fleet")
                await self._check_drift(current)
        except Exception:
            log.exception("cannot read the fleet's configuration at start; serving this host's files until the store answers")

    async def _adopt(self, version: SharedVersion, *, source: str) -> ApplyResult:
        """Apply a fleet version on this worker (the lock is held); a version this host cannot apply is refused here only."""
        kernel = self.current
        assert kernel is not None
        running = shared_files(kernel.config.raw.files)
        if shared_digest(running) == version.digest:
            # The same files (a rollback to identical settings, or this host's start-up files): only the number changes.
            kernel.config_version = version.version
            self._applied_at = time.time()
            if shared_digest(read_shared_files(self.settings_dir)) == version.digest:
                self._fleet_digest = version.digest
            self.fleet_refused = {number: reason for number, reason in self.fleet_refused.items() if number > version.version}
            self._update_worker_file()
            return ApplyResult(applied=False, version=version.version, generation=kernel.generation)
        try:
            valid = self.check_files(version.files)
        except ConfigError as error:
            return self._refuse_version(version, str(error))
        result = await self._apply(source=source, note=version.note, raw=valid.raw, fleet_version=version.version)
        if result.error:
            return self._refuse_version(version, result.error)
        self.fleet_refused = {number: reason for number, reason in self.fleet_refused.items() if number > version.version}
        await asyncio.to_thread(self._write_shared, version)
        return result

    def _refuse_version(self, version: SharedVersion, reason: str) -> ApplyResult:
        kernel = self.current
        assert kernel is not None
        if version.version not in self.fleet_refused:
            log.error(
                "configuration version %s refused on this host, still serving version %s: %s",
                version.version,
                kernel.config_version,
                reason,
            )
        self.fleet_refused[version.version] = reason
        self._update_worker_file()
        return ApplyResult(applied=False, version=kernel.config_version, generation=kernel.generation, error=reason)

    def _write_shared(self, version: SharedVersion) -> None:
        """Put the applied version in this host's shared files, unless they drifted (an operator's edit is never overwritten)."""
        on_disk = read_shared_files(self.settings_dir)
        if shared_digest(on_disk) not in (self._fleet_digest, version.digest):
            return
        for name, text in version.files.items():
            if on_disk.get(name) != text:
                _write_atomically(self.settings_dir / name, text)
        self._fleet_digest = version.digest

    async def _settings_changed(self) -> None:
        """Fleet mode's answer to an edited settings file: host-only files apply, shared files that are not the fleet's are drift."""
        assert self.store is not None
        current = await self.store.current()
        async with self._lock:
            kernel = self.current
            assert kernel is not None
            on_disk = await asyncio.to_thread(read_shared_files, self.settings_dir)
            if shared_digest(on_disk) == shared_digest(kernel.config.raw.files):
                await self._apply(source="file")  # settings.local.toml or .secrets.toml: this host's own
            elif current is not None and current.digest == shared_digest(on_disk) and current.version not in self.fleet_refused:
                await self._adopt(current, source="fleet")
            await self._check_drift(current)

    async def _check_drift(self, current: SharedVersion | None) -> None:
        """Compare this host's shared files with the version it serves; report a difference (log, /-/ready, heartbeat)."""
        kernel = self.current
        assert kernel is not None
        on_disk = await asyncio.to_thread(read_shared_files, self.settings_dir)
        digest = shared_digest(on_disk)
        if digest == shared_digest(kernel.config.raw.files) or (current is not None and digest == current.digest):
            if self.drift is not None:
                log.info("this host's settings files match the fleet's version %s again", kernel.config_version)
            self.drift, self._drift_digest = None, None
            return
        if digest == self._drift_digest:
            return
        try:
            self.check_files(on_disk)
            verdict = "they validate: publish them with `botcriptofy config apply FILE` or restore the fleet's version"
        except ConfigError as error:
            verdict = f"they would be refused: {error}"
        names = ", ".join(sorted(set(on_disk) | set(SHARED_FILES)))
        self.drift = f"{names} differ from the fleet's version {kernel.config_version} and are not applied; {verdict}"
        self._drift_digest = digest
        log.warning("configuration drift: %s", self.drift)

    async def _reconcile(self) -> None:
        assert self.store is not None
        current = await self.store.current()
        async with self._lock:
            kernel = self.current
            assert kernel is not None
            if current is not None and current.version != kernel.config_version and current.version not in self.fleet_refused:
                await self._adopt(current, source="fleet")
            await self._check_drift(current)

    async def _follow_fleet(self) -> None:
        """Apply the fleet's current version when the store says it changed, and every reconcile interval; send heartbeats."""
        failing = False
        while not self._stop_watching.is_set():
            interval = self.store.reconcile_interval if self.store is not None else 1.0
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await self._fleet_wake.wait()
            self._fleet_wake.clear()
            store = self.store
            if self._stop_watching.is_set() or store is None:
                continue
            try:
                await self._reconcile()
                await store.heartbeat(await asyncio.to_thread(self.describe_fleet_worker))
            except asyncio.CancelledError:
                raise
            except Exception as error:
                if not failing:
                    log.warning("cannot reach the fleet's configuration store (retrying): %s", describe_failure(error))
                failing = True
            else:
                if failing:
                    log.info("the fleet's configuration store answers again")
                failing = False

    def describe_fleet_worker(self) -> dict[str, Any]:
        """This worker for the fleet's status: its description, installed versions, refused versions, drift."""
        report = self.describe_worker()
        versions = installed_versions(self.plugins.values())  # one look at sys.path for all of them
        for name, plugin in report["plugins"].items():
            installed = versions.get(name, plugin["installed"])
            plugin["installed"] = installed
            plugin["restart_pending"] = installed != plugin["running"]
        report["refused_versions"] = {str(number): reason for number, reason in sorted(self.fleet_refused.items())}
        report["drift"] = self.drift
        report["applied_at"] = self._applied_at
        return report

    def fleet_notes(self) -> dict[str, str]:
        """What /-/ready says about fleet mode without failing readiness: drift, and versions this host refused."""
        notes: dict[str, str] = {}
        if self.drift:
            notes["config.drift"] = self.drift
        for number, reason in sorted(self.fleet_refused.items()):
            notes[f"config.refused.{number}"] = reason
        return notes

    # -- workers of one host --------------------------------------------------------------

    def describe_worker(self) -> dict[str, Any]:
        """This worker as ``plugins list`` and ``plugins rescan`` see it: pid, generation, plugin versions."""
        kernel = self.current
        return {
            "pid": os.getpid(),
            "generation": kernel.generation if kernel else None,
            "config_version": kernel.config_version if kernel else None,
            "plugins": {
                name: {"running": info.running_version, "installed": info.version, "enabled": kernel is not None and name in kernel.plugins}
                for name, info in sorted(self.plugins.items())
            },
            "ready": kernel is not None and not self.start_failures,
            "refused": self.refused_plugins(),
            "not_started": self.not_ready(),
        }

    def _register_worker(self) -> None:
        assert self.current is not None
        directory = workers_directory(self.current.state_dir)
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError:
            log.exception("cannot create %s; `plugins list` and `plugins rescan` will not see this worker", directory)
            return
        self._worker_file = directory / f"{os.getpid()}.json"
        self._update_worker_file()

    def _update_worker_file(self) -> None:
        if self._worker_file is not None:
            _write_atomically(self._worker_file, json.dumps(self.describe_worker(), sort_keys=True))

    async def _answer_rescan(self, request: Path) -> None:
        try:
            request_id = (await asyncio.to_thread(request.read_text, encoding="utf-8")).strip()
        except OSError:
            return
        result = await self.rescan(source="file")
        outcome = {**self.describe_worker(), "request": request_id, "applied": result.applied, "error": result.error}
        _write_atomically(request.parent / f"{request_id}.{os.getpid()}.json", json.dumps(outcome, sort_keys=True))

    async def _record(self, kernel: Kernel, *, source: str, note: str = "") -> int:
        assert self.history is not None
        raw = kernel.config.raw
        return await asyncio.to_thread(
            self.history.record, digest=raw.digest, files=raw.files, settings=mask_secrets(raw.data), source=source, note=note
        )

    async def _build(
        self, raw: RawConfig, *, previous: Kernel | None, refusable: frozenset[str] = frozenset(), refuse_settings: bool = False
    ) -> tuple[Kernel, Plan, dict[str, str]]:
        """Build the next generation; a failure of a ``refusable`` plugin refuses that plugin, any other fails the build.

        With ``refuse_settings``, invalid settings of a refusable plugin refuse it too (a rescan finding a new plugin).
        Return the generation, its plan and the plugins refused on the way, with the reason.
        """
        refused: dict[str, str] = {}
        while True:
            try:
                config = self.validate(raw)
            except ConfigError as error:
                name = (error.key or "").partition(".")[0]
                if not refuse_settings or name not in refusable or name not in self.plugins or self.plugins[name].error is not None:
                    raise
                refused[name] = self._refuse(name, error)
                continue
            active = {
                name: info
                for name, info in self.plugins.items()
                if info.error is None and (info.builtin or (name not in config.disabled and (self.only is None or name in self.only)))
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
                if error.plugin not in refusable or error.plugin not in self.plugins or self.plugins[error.plugin].builtin:
                    raise
                refused[error.plugin] = self._refuse(error.plugin, error)
                continue
            self._generations = kernel.generation
            return kernel, plan, refused

    def _refuse(self, name: str, error: BaseException) -> str:
        """Mark a plugin refused, log why with the traceback, and return the reason (with the underlying cause)."""
        reason = describe_failure(error)
        log.error("refused %s", reason, exc_info=error, extra={"plugin": name, "hook": getattr(error, "hook", None)})
        self.plugins[name] = self.plugins[name].refused(reason)
        return reason

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
            for key in sorted(kernel.plugins[name].guarded_keys):
                if getattr(old, key) != getattr(new, key):
                    dotted = f"{name}.{key}"
                    raise ConfigError(
                        "is a backend address, which never changes while the service runs (requests would silently go "
                        "to another backend). To switch, restart the service: `botcriptofy restart` replaces the "
                        "workers one at a time and each starts on the new address; or restore the previous value.",
                        file=kernel.config.raw.locate(dotted),
                        key=dotted,
                    )
            changed = frozenset(key for key in type(new).model_fields if getattr(old, key) != getattr(new, key))
            if changed <= kernel.plugins[name].live_keys:
                plan.reconfiguring.append((name, old, new, changed))
            else:
                plan.restarting.append(name)
        plan.restarting.sort()
        if previous is not None and previous.config.kernel.trusted_proxies != kernel.config.kernel.trusted_proxies:
            raise ConfigError(
                "is read by the HTTP server when it starts: restart the service (`botcriptofy restart`) to apply it, "
                "or restore the previous value.",
                file=kernel.config.raw.locate("kernel.trusted_proxies"),
                key="kernel.trusted_proxies",
            )
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
        """Call each plugin's ``shutdown`` (reverse start-up order); one that fails or hangs is logged and left behind."""
        wanted = set(names)
        limit = kernel.kernel_settings.stop_timeout
        for impl in kernel.hook.shutdown.get_hookimpls():
            if impl.plugin_name in wanted:
                try:
                    async with asyncio.timeout(limit):
                        await kernel.call_plugin(impl.plugin_name, "shutdown", kernel=kernel)
                except PluginError as error:
                    log.error("%s", error, extra={"plugin": impl.plugin_name, "hook": "shutdown"})
                except TimeoutError:
                    log.error(
                        "plugin '%s', hook 'shutdown': still running after %.0f s (kernel.stop_timeout); abandoned",
                        impl.plugin_name,
                        limit,
                        extra={"plugin": impl.plugin_name, "hook": "shutdown"},
                    )

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
        owners: dict[tuple[str, str], str] = {}
        clashes: dict[str, list[str]] = {}
        collected = await self._collect(kernel, "register_routes")
        # A route belongs to the plugin that already served it: the newcomer is the one refused.
        established = set(self.current.plugins) if self.current is not None else set()
        for plugin, route in sorted(collected, key=lambda pair: pair[0] not in established):
            if isinstance(route, StarletteRoute):
                for method in sorted(set(route.methods or ()) - {"HEAD"}):
                    owner = owners.setdefault((route.path, method), plugin)
                    if owner != plugin:
                        clashes.setdefault(plugin, []).append(f"{method} {route.path} (declared by plugin '{owner}')")
        routes: list[BaseRoute] = [route for _, route in collected]
        for plugin, clashing in clashes.items():
            raise PluginError(
                plugin,
                f"declares {len(clashing)} route(s) already declared by another plugin: {'; '.join(clashing)}.",
                hook="register_routes",
                fix="change the paths, or disable one of the plugins.",
            )
        middleware = [item for _, item in await self._collect(kernel, "register_middleware")]
        middleware.sort(key=lambda item: item.priority if isinstance(item, Middleware) else 300)
        observers = await self._collect(kernel, "register_response_observers")
        for plugin, observer in observers:
            if not callable(observer):
                raise PluginError(
                    plugin,
                    f"returned {type(observer).__name__}, not a callable",
                    hook="register_response_observers",
                    fix="return a list of callables taking (scope, status, seconds).",
                )
        kernel.response_observers = tuple(observer for _, observer in observers)
        handlers: list[EventHandler] = []
        for plugin, handler in await self._collect(kernel, "register_event_handlers"):
            handlers.append(replace(handler, plugin=plugin) if isinstance(handler, EventHandler) and handler.plugin is None else handler)
            if not isinstance(handler, EventHandler):
                raise PluginError(
                    plugin,
                    f"returned {type(handler).__name__}, not EventHandler",
                    hook="register_event_handlers",
                    fix="return a list of botcriptofy.EventHandler.",
                )
        app = GenerationApp(
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
            async with asyncio.timeout(kernel.kernel_settings.drain_timeout):
                await kernel.drained.wait()
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

        assert self.current is not None
        rescan_dir = rescan_directory(self.current.state_dir).resolve()
        rescan_dir.mkdir(parents=True, exist_ok=True)
        request = rescan_dir / RESCAN_REQUEST

        def relevant(_: object, path: str) -> bool:
            return path == str(request) or (os.path.basename(path).endswith(".toml") and Path(path).parent != rescan_dir)

        while not self._stop_watching.is_set():
            try:
                async for changes in awatch(
                    self.settings_dir,
                    rescan_dir,
                    watch_filter=relevant,
                    debounce=60,
                    step=20,
                    stop_event=self._stop_watching,
                    recursive=False,
                ):
                    if any(path == str(request) for _, path in changes):
                        await self._answer_rescan(request)
                    elif self.store is not None:
                        await self._settings_changed()
                    else:
                        async with self._lock:  # not reload(): the next change need not wait for this one's ConfigApplied
                            await self._apply(source="file")
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("settings watcher failed; restarting it")
                await asyncio.sleep(0.5)


def refuse_lost_files(previous: RawConfig, current: RawConfig) -> None:
    """Refuse a live change that deleted the main settings file or emptied one: a lost file is not a configuration."""
    main = SETTINGS_FILES[0]
    if main in previous.files and not _is_empty(previous.files[main]) and main not in current.files:
        raise ConfigError(
            "is missing: a deleted settings file is not applied as a configuration. Restore it, "
            "or roll back with `botcriptofy config rollback VERSION`.",
            file=str(current.directory / main),
        )
    for name, text in current.files.items():
        if _is_empty(text) and not _is_empty(previous.files.get(name, "")):
            raise ConfigError(
                "is empty: an emptied settings file is not applied as a configuration (it would put every setting "
                "back to its default). Restore it, or roll back with `botcriptofy config rollback VERSION`.",
                file=str(current.directory / name),
            )


def _is_empty(text: str) -> bool:
    try:
        return not tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return False


def write_settings_file(path: Path, text: str) -> None:
    """Replace one settings file atomically."""
    _write_atomically(path, text)


def _write_atomically(path: Path, text: str) -> None:
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(temporary, path)


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


def read_shared_files(directory: Path) -> dict[str, str]:
    """This host's copies of the settings files the fleet shares."""
    found = {}
    for name in SHARED_FILES:
        path = directory / name
        if path.exists():
            found[name] = path.read_text(encoding="utf-8")
    return found


def describe_failure(error: BaseException) -> str:
    """Say why a plugin failed: its error, and the underlying exception's type and message when the error wraps one."""
    message = str(error)
    cause: BaseException | None = error
    seen: set[int] = set()
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        underlying = cause.__cause__ or (None if cause.__suppress_context__ else cause.__context__)
        if underlying is None:
            break
        cause = underlying
    if cause is not None and cause is not error:
        detail = f"{type(cause).__name__}: {cause}" if str(cause) else type(cause).__name__
        if detail not in message and str(cause) not in message:
            message = f"{message} (cause: {detail})"
    return message


# Installed versions read from the distributions' metadata, valid while no directory of sys.path changes.
_installed: tuple[tuple[int, ...], dict[str, str | None]] = ((), {})


def _path_stamp() -> tuple[int, ...]:
    """The modification times of sys.path's directories: installing or removing a distribution changes one."""
    stamp = []
    for entry in sys.path:
        try:
            stamp.append(os.stat(entry or ".").st_mtime_ns)
        except OSError:
            stamp.append(0)
    return tuple(stamp)


def installed_versions(infos: Iterable[PluginInfo]) -> dict[str, str]:
    """The version of each plugin's distribution installed now (it may be newer than the code running), by plugin name.

    Reading a distribution's metadata costs a fraction of a millisecond, and ``/-/plugins`` (public by
    default) asks for every plugin: about 10 ms a request. The versions are kept until a directory of
    sys.path changes, as a ``pip install`` or ``uninstall`` changes its site-packages directory.
    """
    global _installed
    stamp = _path_stamp()
    if _installed[0] != stamp:
        _installed = (stamp, {})
    known = _installed[1]
    found: dict[str, str] = {}
    for info in infos:
        if info.distribution is None:
            found[info.name] = info.version
            continue
        if info.distribution not in known:
            try:
                known[info.distribution] = metadata.version(info.distribution)
            except metadata.PackageNotFoundError:
                known[info.distribution] = None
        found[info.name] = known[info.distribution] or info.version
    return found


def rescan_directory(state_dir: Path) -> Path:
    """Where rescan requests and the workers' answers live (inside the state directory, not the settings)."""
    return Path(state_dir) / "rescan"


def workers_directory(state_dir: Path) -> Path:
    """Where each running worker keeps a description of itself (pid, generation, plugin versions)."""
    return Path(state_dir) / "workers"


def request_rescan(state_dir: Path) -> str:
    """Ask every worker of ``state_dir`` to look for newly installed plugins; return the request's id."""
    directory = rescan_directory(state_dir)
    directory.mkdir(parents=True, exist_ok=True)
    request_id = uuid.uuid4().hex
    fd, temporary = tempfile.mkstemp(dir=directory, prefix=".request.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(request_id)
    os.replace(temporary, directory / RESCAN_REQUEST)
    return request_id


def read_workers(state_dir: Path) -> list[dict[str, Any]]:
    """Describe the running workers of ``state_dir`` (files of processes that died are removed)."""
    found = []
    for path in sorted(workers_directory(state_dir).glob("*.json")):
        try:
            described = json.loads(path.read_text(encoding="utf-8"))
            os.kill(int(described["pid"]), 0)
        except ProcessLookupError:
            path.unlink(missing_ok=True)
            continue
        except (OSError, ValueError, KeyError):
            continue
        found.append(described)
    return found


async def publish_config_applied(kernel: Kernel, *, source: str, note: str, changes: dict[str, list[str]], retry_for: float = 0.0) -> None:
    """Publish :class:`ConfigApplied` on the new generation (the audit trail records it); a failure is logged, not raised.

    While a dependency is unavailable (:class:`ServiceUnavailable`: the outbox's database down), the
    publication is retried with backoff for up to ``retry_for`` seconds.
    """
    if not kernel.events.handler_names(ConfigApplied.event_type):
        return  # nobody listens: do not fill the outbox
    rollback = note.removeprefix("rollback to version ") if note.startswith("rollback to version ") else None
    event = ConfigApplied(
        version=kernel.config_version,
        generation=kernel.generation,
        source=source,
        rollback_to=int(rollback) if rollback is not None and rollback.isdigit() else None,
        started=changes.get("started", []),
        stopped=changes.get("stopped", []),
        restarted=changes.get("restarted", []),
        reconfigured=changes.get("reconfigured", []),
    )
    # Every worker of a host applies the same version and publishes it: one key per host (its name and state
    # directory) and version lets the handlers, the audit trail among them, keep it once.
    host = hashlib.sha256(f"{socket.gethostname()}:{kernel.state_dir.resolve()}".encode()).hexdigest()[:16]
    key = f"config-applied:{host}:{kernel.config_version}"
    deadline = time.monotonic() + retry_for
    delay = 0.5
    waited = False
    while True:
        try:
            await kernel.events.publish(event, idempotency_key=key)
        except ServiceUnavailable as error:
            if time.monotonic() + delay <= deadline:
                if not waited:
                    log.warning(
                        "configuration version %s applied; its ConfigApplied event waits: %s (retrying)", kernel.config_version, error
                    )
                waited = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
                continue
            log.exception("configuration version %s applied, but its ConfigApplied event could not be published", kernel.config_version)
        except Exception:
            log.exception("configuration version %s applied, but its ConfigApplied event could not be published", kernel.config_version)
        else:
            if waited:
                log.info("configuration version %s: its ConfigApplied event is published", kernel.config_version)
        return
