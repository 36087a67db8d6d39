"""The ``botcriptofy`` command line: serve, plugins, config, and the commands plugins add."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from ._errors import ConfigError
from ._util import await_me_maybe

if TYPE_CHECKING:
    from ._kernel import Kernel, Runtime

F = TypeVar("F", bound=Callable[..., Any])
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


@dataclass
class CliContext:
    settings_dir: Path
    env: str | None

    def runtime(self, *, watch: bool = False) -> Runtime:
        from ._kernel import Runtime

        return Runtime(self.settings_dir, env=self.env, watch=watch)


def pass_kernel(func: F) -> F:
    """Decorate a command so it runs (sync or async) with a started kernel as its first argument."""

    @click.pass_context
    @functools.wraps(func)
    def wrapper(ctx: click.Context, *args: Any, **kwargs: Any) -> Any:
        cli = ctx.find_object(CliContext)
        assert cli is not None

        async def run() -> Any:
            runtime = cli.runtime()
            try:
                kernel: Kernel = await runtime.start(source="cli")
            except ConfigError as error:
                raise click.ClickException(str(error)) from None
            try:
                return await await_me_maybe(func(kernel, *args, **kwargs))
            finally:
                await runtime.stop()

        return asyncio.run(run())

    return wrapper  # type: ignore[return-value]


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


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64))
@click.option("--access-log/--no-access-log", default=False, show_default=True)
@click.pass_obj
def serve(obj: CliContext, host: str, port: int, workers: int, access_log: bool) -> None:
    """Serve the HTTP API; settings changes apply live in every worker."""
    import uvicorn

    runtime = obj.runtime()
    runtime.plugins = runtime.scan()
    try:
        from ._settings import load

        runtime.validate(load(obj.settings_dir, obj.env))
    except ConfigError as error:
        raise click.ClickException(f"configuration refused: {error}") from None
    os.environ["BOTCRIPTOFY_SETTINGS_DIR"] = str(obj.settings_dir)
    if obj.env:
        os.environ["BOTCRIPTOFY_ENV"] = obj.env
    uvicorn.run(
        "botcriptofy._cli:app_from_environment",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        access_log=access_log,
        log_level="info",
        lifespan="on",
        server_header=False,
    )


def app_from_environment() -> Runtime:
    """The ASGI app factory that ``serve`` hands to each uvicorn worker."""
    from ._kernel import Runtime

    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    return Runtime(os.environ.get("BOTCRIPTOFY_SETTINGS_DIR"), env=os.environ.get("BOTCRIPTOFY_ENV"))


# -- plugins ------------------------------------------------------------------------------


@cli.group()
def plugins() -> None:
    """List installed plugins; look for newly installed ones."""


@plugins.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def plugins_list(obj: CliContext, as_json: bool) -> None:
    """List every installed plugin with its version, state and hooks."""
    from ._settings import load

    runtime = obj.runtime()
    found = runtime.scan()
    runtime.plugins = found
    disabled: frozenset[str] = frozenset()
    try:
        disabled = runtime.validate(load(obj.settings_dir, obj.env)).disabled
    except ConfigError as error:
        click.echo(f"warning: {error}", err=True)
    rows: list[dict[str, Any]] = [
        {
            "name": name,
            "version": info.version,
            "enabled": info.error is None and name not in disabled,
            "builtin": info.builtin,
            "distribution": info.distribution,
            "hooks": list(info.hooks),
            "error": info.error,
        }
        for name, info in sorted(found.items())
    ]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        state = "enabled" if row["enabled"] else ("refused" if row["error"] else "disabled")
        click.echo(f"{row['name']:<24} {row['version']:<10} {state:<9} {', '.join(row['hooks'])}")
        if row["error"]:
            click.echo(f"    {row['error']}")


@plugins.command("rescan")
@click.pass_obj
def plugins_rescan(obj: CliContext) -> None:
    """Ask every running worker to pick up newly installed plugins, without a restart."""
    from ._kernel import request_rescan

    request_rescan(obj.settings_dir)
    click.echo(f"asked the workers watching {obj.settings_dir} to rescan installed plugins")


# -- config -------------------------------------------------------------------------------


@cli.group()
def config() -> None:
    """Show, check, list and roll back configurations."""


def _validated(obj: CliContext) -> Any:
    from ._settings import load

    runtime = obj.runtime()
    runtime.plugins = runtime.scan()
    return runtime, runtime.validate(load(obj.settings_dir, obj.env))


@config.command("check")
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
@click.pass_obj
def config_show(obj: CliContext) -> None:
    """Print the effective settings (secrets masked)."""
    from ._settings import mask_secrets

    try:
        _, valid = _validated(obj)
    except ConfigError as error:
        raise click.ClickException(str(error)) from None
    click.echo(json.dumps(mask_secrets(valid.raw.data), indent=2, sort_keys=True, default=str))


def _history(obj: CliContext) -> Any:
    from ._history import ConfigHistory

    try:
        _, valid = _validated(obj)
        state_dir = Path(valid.kernel.state_dir)
    except ConfigError:
        state_dir = Path("var")
    return ConfigHistory(state_dir / "config-history.sqlite3")


@config.command("history")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--json", "as_json", is_flag=True, help="Print JSON with each version's diff.")
@click.pass_obj
def config_history(obj: CliContext, limit: int, as_json: bool) -> None:
    """List applied configurations, newest first."""
    versions = _history(obj).versions(limit)
    if as_json:
        click.echo(json.dumps([v.summary() for v in versions], indent=2, default=str))
        return
    for version in versions:
        changed = ", ".join(sorted(version.diff)) or "-"
        note = f" ({version.note})" if version.note else ""
        click.echo(f"{version.version:>5}  {version.applied_at}  {version.source:<8} {changed}{note}")


@config.command("rollback")
@click.argument("version", type=click.IntRange(1))
@click.pass_obj
def config_rollback(obj: CliContext, version: int) -> None:
    """Restore the settings files of an earlier version; running workers apply them within a second."""
    from ._kernel import write_settings_files
    from ._settings import load, mask_secrets

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


def main() -> None:
    """Entry point: add the commands of every installed plugin, then run."""
    from ._manager import discover, new_plugin_manager

    for name, info in discover().items():
        if info.error is None and "register_commands" in info.hooks:
            manager = new_plugin_manager()
            manager.register(info.plugin, name=name)
            try:
                manager.hook.register_commands(cli=cli)
            except Exception as error:
                click.echo(f"warning: plugin '{name}', hook 'register_commands': {error!r}", err=True)
    cli(prog_name="botcriptofy")
