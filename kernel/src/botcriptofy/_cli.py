"""The ``botcriptofy`` command line: serve, plugins, config, and the commands plugins add."""

from __future__ import annotations

import asyncio
import functools
import getpass
import json
import logging
import math
import os
import signal
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from ._acting import acting_as
from ._app import Runtime
from ._errors import ConfigError
from ._history import ConfigHistory
from ._manager import discover, new_plugin_manager
from ._runtime import read_workers, request_rescan, rescan_directory, write_settings_file, write_settings_files
from ._serve import KEEP_ALIVE, PIDFILE, SERVE_ENVIRONMENT, prepare_metrics_directory, read_restart_status
from ._settings import SETTINGS_FILES, load, mask_secrets
from ._types import Actor
from ._util import await_me_maybe

if TYPE_CHECKING:
    from ._kernel import Kernel

F = TypeVar("F", bound=Callable[..., Any])
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


@dataclass
class CliContext:
    settings_dir: Path
    env: str | None

    def runtime(self, *, watch: bool = False) -> Runtime:
        return Runtime(self.settings_dir, env=self.env, watch=watch)


def operator_actor() -> Actor:
    """The actor commands run as: the operator at the shell, who holds the settings and their secrets anyway."""
    return Actor(id=f"operator:{getpass.getuser()}", kind="operator", super_admin=True, attributes={"via": "cli"})


def pass_kernel(func: F | None = None, *, needs: Iterable[str] = ()) -> Any:
    """Decorate a command so it runs (sync or async) with a started kernel as its first argument, as the operator.

    Inside the command :func:`botcriptofy.acting_actor` returns :func:`operator_actor`'s actor. By default
    every enabled plugin starts (the embedded Temporal server included). ``@pass_kernel(needs=("database",
    "record_audit"))`` starts only the enabled plugins that implement one of those hooks: a command that
    reads the database starts in about a second.
    """
    if func is None:
        return functools.partial(pass_kernel, needs=needs)
    wanted = frozenset(needs)

    @click.pass_context
    @functools.wraps(func)
    def wrapper(ctx: click.Context, *args: Any, **kwargs: Any) -> Any:
        cli = ctx.find_object(CliContext)
        assert cli is not None
        assert func is not None

        async def run() -> Any:
            runtime = cli.runtime()
            if wanted:
                runtime.only = _providers(cli, wanted)
            try:
                kernel: Kernel = await runtime.start(source="cli")
            except ConfigError as error:
                raise click.ClickException(str(error)) from None
            try:
                with acting_as(operator_actor()):
                    return await await_me_maybe(func(kernel, *args, **kwargs))
            finally:
                await runtime.stop()

        return asyncio.run(run())

    return wrapper


@click.group()
@click.option(
    "--settings",
    "settings_dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="BOTCRIPTOFY_SETTINGS_DIR",
    default=Path("settings"),
    show_default=True,
    help="The settings directory.",
)
@click.option(
    "--env",
    type=click.Choice(["development", "testing", "production"]),
    envvar="BOTCRIPTOFY_ENV",
    default=None,
    help="The settings environment (default: development).",
)
@click.pass_context
def cli(ctx: click.Context, settings_dir: Path, env: str | None) -> None:
    """BotCriptoFy: the plugin kernel of a multi-tenant crypto-trading platform."""
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    ctx.obj = CliContext(settings_dir=settings_dir.resolve(), env=env)


def settings_options(command: F) -> F:
    """Accept ``--settings DIR`` and ``--env`` after the command too (``botcriptofy serve --settings DIR``)."""

    def set_settings_dir(ctx: click.Context, _: click.Parameter, value: Path | None) -> None:
        if value is not None:
            ctx.ensure_object(CliContext).settings_dir = value.resolve()

    def set_env(ctx: click.Context, _: click.Parameter, value: str | None) -> None:
        if value is not None:
            ctx.ensure_object(CliContext).env = value

    command = click.option(
        "--env",
        type=click.Choice(["development", "testing", "production"]),
        default=None,
        expose_value=False,
        callback=set_env,
        help="The settings environment (same as before the command).",
    )(command)
    return click.option(
        "--settings",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        expose_value=False,
        callback=set_settings_dir,
        help="The settings directory (same as before the command).",
    )(command)


def _state_dir(obj: CliContext) -> Path:
    """The state directory the settings name (``var`` when they cannot be read), resolved like the workers resolve it."""
    try:
        _, valid = _validated(obj)
        return Path(valid.kernel.state_dir).resolve()
    except ConfigError:
        return Path("var").resolve()


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64))
@click.option("--access-log/--no-access-log", default=False, show_default=True)
@click.option(
    "--timeout", default=60, show_default=True, type=click.IntRange(5), help="Seconds a silent worker may take before it is replaced."
)
@click.option(
    "--keep-alive",
    default=KEEP_ALIVE,
    show_default=True,
    type=click.IntRange(1),
    help="Seconds an idle keep-alive connection stays open; keep it above the clients' and the proxy's idle timeouts.",
)
@settings_options
@click.pass_obj
def serve(obj: CliContext, host: str, port: int, workers: int, access_log: bool, timeout: int, keep_alive: int) -> None:
    """Serve the HTTP API with gunicorn and uvicorn workers; settings changes apply live in every worker.

    `botcriptofy restart` (or SIGHUP to the master) replaces the workers one at a time to run newly installed code.
    """
    try:
        _, valid = _validated(obj)
    except ConfigError as error:
        raise click.ClickException(f"configuration refused: {error}") from None
    state_dir = Path(valid.kernel.state_dir).resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    bind = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    options: dict[str, Any] = {
        "bind": [bind],
        "workers": workers,
        "worker_class": "botcriptofy._serve.Worker",
        "timeout": timeout,
        "graceful_timeout": max(1, math.ceil(valid.kernel.drain_timeout)),
        "keepalive": keep_alive,
        "accesslog": "-" if access_log else None,
        "errorlog": "-",
        "loglevel": "info",
        "pidfile": str(state_dir / PIDFILE),
        "forwarded_allow_ips": ",".join(valid.kernel.trusted_proxies),
        "control_socket_disable": True,
        "proc_name": "botcriptofy",
    }
    os.environ["BOTCRIPTOFY_SETTINGS_DIR"] = str(obj.settings_dir)
    if obj.env:
        os.environ["BOTCRIPTOFY_ENV"] = obj.env
    os.environ[SERVE_ENVIRONMENT] = json.dumps({"options": options, "state_dir": str(state_dir)})
    prepare_metrics_directory(state_dir)
    sys.stdout.flush()
    sys.stderr.flush()
    # A clean master: it never imports a plugin, so every worker it starts imports the code installed now.
    os.execv(sys.executable, [sys.executable, "-c", "from botcriptofy._serve import main; main()"])


@cli.command()
@click.option("--timeout", default=300.0, show_default=True, type=click.FloatRange(1), help="Seconds to wait for every worker.")
@settings_options
@click.pass_obj
def restart(obj: CliContext, timeout: float) -> None:
    """Replace the running workers one at a time (new code, guarded settings), with no failed request.

    Each new worker is ready before an old one stops taking connections; the old one finishes its
    requests. The same as `kill -HUP $(cat STATE_DIR/botcriptofy.pid)`.
    """
    state_dir = _state_dir(obj)
    pidfile = state_dir / PIDFILE
    try:
        master = int(pidfile.read_text(encoding="utf-8").strip())
        os.kill(master, 0)
    except (OSError, ValueError):
        raise click.ClickException(f"no running server: {pidfile} names no live process (start one with `botcriptofy serve`)") from None
    before = int(read_restart_status(state_dir).get("number", 0))
    os.kill(master, signal.SIGHUP)
    click.echo(f"asked the server (pid {master}) to replace its workers one at a time")
    deadline = time.monotonic() + timeout
    while True:
        status = read_restart_status(state_dir)
        if int(status.get("number", 0)) > before and status.get("state") in ("done", "failed"):
            break
        if time.monotonic() > deadline:
            raise click.ClickException(f"the restart did not finish within {timeout:.0f} s; see the server's log")
        time.sleep(0.2)
    if status["state"] == "failed":
        raise click.ClickException(f"restart stopped, the old workers keep serving: {status.get('reason')}")
    click.echo(f"restarted: {status.get('replaced', 0)} worker(s) replaced")


# -- plugins ------------------------------------------------------------------------------


@cli.group()
def plugins() -> None:
    """List installed plugins; look for newly installed ones."""


@plugins.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@settings_options
@click.pass_obj
def plugins_list(obj: CliContext, as_json: bool) -> None:
    """List every installed plugin: version installed and running in each worker, state, hooks, why refused."""
    runtime = obj.runtime()
    found = runtime.scan()
    runtime.plugins = found
    disabled: frozenset[str] = frozenset()
    state_dir = Path("var").resolve()
    try:
        valid = runtime.validate(load(obj.settings_dir, obj.env))
        disabled, state_dir = valid.disabled, Path(valid.kernel.state_dir).resolve()
    except ConfigError as error:
        click.echo(f"warning: {error}", err=True)
    workers = read_workers(state_dir)
    names = sorted(set(found) | {name for worker in workers for name in worker.get("plugins", {})})
    rows: list[dict[str, Any]] = []
    for name in names:
        info = found.get(name)
        installed = info.version if info is not None else None
        running = {str(worker["pid"]): worker["plugins"][name]["running"] for worker in workers if name in worker.get("plugins", {})}
        refused = {str(worker["pid"]): worker["refused"][name] for worker in workers if name in worker.get("refused", {})}
        reason = (info.error if info is not None else None) or next(iter(refused.values()), None)
        rows.append(
            {
                "name": name,
                "version": installed,
                "running": running,
                "restart_pending": any(version != installed for version in running.values()),
                "enabled": info is not None and reason is None and name not in disabled,
                "builtin": info.builtin if info is not None else False,
                "distribution": info.distribution if info is not None else None,
                "hooks": list(info.hooks) if info is not None else [],
                "error": reason,
            }
        )
    scheduling = [row["name"] for row in rows if row["enabled"] and "register_schedules" in row["hooks"]]
    if scheduling and not any(row["enabled"] and "workflow_engine" in row["hooks"] for row in rows):
        click.echo(f"warning: schedules of {', '.join(scheduling)} are not running: no workflows plugin is enabled", err=True)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not workers:
        click.echo(f"(no running worker found in {state_dir}; showing the installed plugins)")
    for row in rows:
        state = "enabled" if row["enabled"] else ("refused" if row["error"] else "disabled")
        versions = ", ".join(sorted(set(row["running"].values()))) or "-"
        pending = "  restart pending" if row["restart_pending"] else ""
        click.echo(f"{row['name']:<24} {row['version'] or '-':<10} running {versions:<10} {state:<9} {', '.join(row['hooks'])}{pending}")
        if row["error"]:
            click.echo(f"    {row['error']}")


@plugins.command("rescan")
@click.option("--timeout", default=30.0, show_default=True, type=click.FloatRange(0.1), help="Seconds to wait for the workers.")
@settings_options
@click.pass_obj
def plugins_rescan(obj: CliContext, timeout: float) -> None:
    """Ask every running worker to pick up newly installed plugins, without a restart; report what each did.

    Exit status 1 when a worker refused a plugin (named with its reason), refused the change, or did not answer.
    """
    state_dir = _state_dir(obj)
    workers = {int(worker["pid"]) for worker in read_workers(state_dir)}
    if not workers:
        raise click.ClickException(f"no running worker found in {state_dir}; start the service with `botcriptofy serve`")
    request_id = request_rescan(state_dir)
    directory = rescan_directory(state_dir)
    deadline = time.monotonic() + timeout
    outcomes: dict[int, dict[str, Any]] = {}
    while True:
        for path in directory.glob(f"{request_id}.*.json"):
            try:
                outcome = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            outcomes[int(outcome["pid"])] = outcome
        workers = {pid for pid in workers if _alive(pid)}  # a worker replaced meanwhile answers no more
        if workers <= set(outcomes) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    for path in directory.glob(f"{request_id}.*.json"):
        path.unlink(missing_ok=True)
    failed = False
    for pid in sorted(workers | set(outcomes)):
        outcome = outcomes.get(pid)
        if outcome is None:
            click.echo(f"worker {pid}: no answer within {timeout:.0f} s", err=True)
            failed = True
            continue
        if outcome.get("error"):
            click.echo(f"worker {pid}: change refused: {outcome['error']}", err=True)
            failed = True
        for name, reason in sorted(outcome.get("refused", {}).items()):
            click.echo(f"worker {pid}: plugin '{name}' refused: {reason}", err=True)
            failed = True
        if not outcome.get("error") and not outcome.get("refused"):
            enabled = sorted(name for name, plugin in outcome.get("plugins", {}).items() if plugin.get("enabled"))
            click.echo(f"worker {pid}: generation {outcome.get('generation')}, plugins: {', '.join(enabled)}")
    if failed:
        sys.exit(1)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


# -- config -------------------------------------------------------------------------------


@cli.group()
def config() -> None:
    """Show, check, list and roll back configurations."""


def _validated(obj: CliContext) -> Any:
    runtime = obj.runtime()
    runtime.plugins = runtime.scan()
    return runtime, runtime.validate(load(obj.settings_dir, obj.env))


@config.command("check")
@settings_options
@click.pass_obj
def config_check(obj: CliContext) -> None:
    """Validate the settings without applying them; exit 1 with the reason when they are invalid."""
    try:
        _, valid = _validated(obj)
    except ConfigError as error:
        click.echo(f"configuration invalid: {error}", err=True)
        sys.exit(1)
    enabled = sorted(name for name in valid.plugins)
    click.echo(f"configuration valid (environment {valid.raw.env}); enabled plugins: {', '.join(enabled) or 'none'}")


@config.command("show")
@settings_options
@click.pass_obj
def config_show(obj: CliContext) -> None:
    """Print the effective settings (secrets masked)."""
    try:
        _, valid = _validated(obj)
    except ConfigError as error:
        raise click.ClickException(str(error)) from None
    click.echo(json.dumps(mask_secrets(valid.raw.data), indent=2, sort_keys=True, default=str))


def _providers(obj: CliContext, hooks: frozenset[str]) -> frozenset[str]:
    """The enabled plugins that implement one of ``hooks`` (none when the settings do not validate: the start says why)."""
    try:
        runtime, valid = _validated(obj)
    except ConfigError:
        return frozenset()
    return frozenset(name for name in valid.plugins if name in runtime.plugins and hooks & set(runtime.plugins[name].hooks))


def _store_providers(obj: CliContext) -> frozenset[str]:
    """The enabled plugins that may provide a shared configuration store (fleet mode): then commands go through it."""
    return _providers(obj, frozenset({"config_store"}))


def _in_fleet_mode(obj: CliContext) -> bool:
    return bool(_store_providers(obj))


def _with_fleet(obj: CliContext, action: Callable[[Runtime], Any]) -> Any:
    """Start a runtime with only the store's plugin (no watching, no heartbeat) and run ``action`` if it joined a fleet.

    Return None in single-host mode (the plugin is installed but provides no store).
    """
    providers = _store_providers(obj)

    async def run() -> Any:
        runtime = obj.runtime()
        runtime.only = providers
        try:
            await runtime.start(source="cli")
        except ConfigError as error:
            raise click.ClickException(str(error)) from None
        try:
            if runtime.store is None:
                return None
            return await action(runtime)
        finally:
            await runtime.stop()

    return asyncio.run(run())


def _report_fleet(result: Any) -> None:
    if result.error:
        raise click.ClickException(f"this host refused version {result.version}: {result.error}")
    click.echo(f"configuration version {result.version} is the fleet's; every host applies it within a second")


def _history(obj: CliContext) -> Any:
    try:
        _, valid = _validated(obj)
        state_dir = Path(valid.kernel.state_dir)
    except ConfigError:
        state_dir = Path("var")
    return ConfigHistory(state_dir / "config-history.sqlite3")


@config.command("history")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--json", "as_json", is_flag=True, help="Print JSON with each version's diff.")
@settings_options
@click.pass_obj
def config_history(obj: CliContext, limit: int, as_json: bool) -> None:
    """List applied configurations, newest first."""
    fleet = None
    if _in_fleet_mode(obj):

        async def newest(runtime: Runtime) -> Any:
            assert runtime.store is not None
            return await runtime.store.history(limit)

        fleet = _with_fleet(obj, newest)
    versions = fleet if fleet is not None else _history(obj).versions(limit)
    if as_json:
        click.echo(json.dumps([v.summary() for v in versions], indent=2, default=str))
        return
    for version in versions:
        changed = ", ".join(sorted(version.diff)) or "-"
        note = f" ({version.note})" if version.note else ""
        click.echo(f"{version.version:>5}  {version.applied_at}  {version.source:<8} {changed}{note}")


@config.command("rollback")
@click.argument("version", type=click.IntRange(1))
@settings_options
@click.pass_obj
def config_rollback(obj: CliContext, version: int) -> None:
    """Restore the settings files of an earlier version; running workers apply them within a second.

    In fleet mode the version is the fleet's: it is validated once and becomes the fleet's next version, applied by every host.
    """
    if _in_fleet_mode(obj):

        async def restore(runtime: Runtime) -> Any:
            try:
                return await runtime.rollback(version, source="cli", actor=operator_actor().id)
            except ConfigError as error:
                raise click.ClickException(f"rollback refused: {error}") from None

        result = _with_fleet(obj, restore)
        if result is not None:
            _report_fleet(result)
            return
    history = _history(obj)
    target = history.get(version)
    if target is None:
        raise click.ClickException(f"there is no configuration version {version}; list them with `botcriptofy config history`")
    runtime = obj.runtime()
    runtime.plugins = runtime.scan()
    try:
        runtime.check_files(target.files)
    except ConfigError as error:
        raise click.ClickException(f"version {version} no longer validates: {error}") from None
    write_settings_files(obj.settings_dir, target.files)
    raw = load(obj.settings_dir, obj.env)
    number = history.record(
        digest=raw.digest, files=raw.files, settings=mask_secrets(raw.data), source="cli", note=f"rollback to version {version}"
    )
    click.echo(f"restored version {version} as version {number}")


@config.command("apply")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@settings_options
@click.pass_obj
def config_apply(obj: CliContext, files: tuple[Path, ...]) -> None:
    """Validate settings files once and apply them; exit 1 with the reason when they are refused.

    Each FILE is named after the settings file it replaces (settings.toml, settings.local.toml). In single-host
    mode they are written to the settings directory, which the running workers apply within a second; in fleet
    mode they become the fleet's next version (settings.toml only: settings.local.toml stays on its host).
    """
    texts = {path.name: path.read_text(encoding="utf-8") for path in files}
    unknown = sorted(name for name in texts if name not in SETTINGS_FILES)
    if unknown:
        raise click.ClickException(
            f"configuration refused: {unknown[0]} is not a settings file the service reads ({', '.join(SETTINGS_FILES)})"
        )
    if _in_fleet_mode(obj):

        async def publish(runtime: Runtime) -> Any:
            try:
                return await runtime.apply_files(texts, source="cli", actor=operator_actor().id)
            except ConfigError as error:
                raise click.ClickException(f"configuration refused: {error}") from None

        result = _with_fleet(obj, publish)
        if result is not None:
            _report_fleet(result)
            return
    runtime = obj.runtime()
    runtime.plugins = runtime.scan()
    try:
        runtime.check_files(texts)
    except ConfigError as error:
        raise click.ClickException(f"configuration refused: {error}") from None
    for name, text in texts.items():
        write_settings_file(obj.settings_dir / name, text)
    click.echo(f"written {', '.join(sorted(texts))} to {obj.settings_dir}; running workers apply it within a second")


def main() -> None:
    """Entry point: add the commands of every installed plugin, then run."""
    for name, info in discover().items():
        if info.error is None and "register_commands" in info.hooks:
            manager = new_plugin_manager()
            manager.register(info.plugin, name=name)
            try:
                manager.hook.register_commands(cli=cli)
            except Exception as error:
                click.echo(f"warning: plugin '{name}', hook 'register_commands': {error!r}", err=True)
    cli(prog_name="botcriptofy")
