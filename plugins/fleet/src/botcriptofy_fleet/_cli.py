"""``botcriptofy fleet status``: every host and worker sharing the configuration."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import click

from botcriptofy import pass_kernel

from ._state import store_of

if TYPE_CHECKING:
    from botcriptofy import Kernel


def describe(status: dict[str, Any]) -> list[str]:
    """The fleet's status as lines of text."""
    lines = [f"fleet configuration version {status['current_version']} (heartbeat timeout {status['heartbeat_timeout']:.0f} s)"]
    if not status["hosts"]:
        lines.append("no host has sent a heartbeat")
    for host in status["hosts"]:
        versions = ", ".join(str(v) for v in host["config_versions"]) or "-"
        state_word = "in sync" if host["in_sync"] else "NOT in sync"
        lines.append(f"host {host['host']}: version {versions} ({state_word}), {len(host['workers'])} worker(s)")
        for worker in host["workers"]:
            pending = f", restart pending: {', '.join(worker['restart_pending'])}" if worker["restart_pending"] else ""
            running = ", ".join(
                f"{name} {plugin['running']}" + (f" (installed {plugin['installed']})" if plugin.get("restart_pending") else "")
                for name, plugin in sorted(worker["plugins"].items())
                if plugin.get("enabled")
            )
            lines.append(
                f"  worker {worker['pid']}: version {worker['config_version']}, generation {worker['generation']}, "
                f"heartbeat {worker['seconds_since_heartbeat']:.1f} s ago, {'ready' if worker['ready'] else 'NOT ready'}{pending}"
            )
            lines.append(f"    plugins: {running or '-'}")
        for number, reason in sorted(host["refused_versions"].items()):
            lines.append(f"  refused version {number}: {reason}")
        if host["drift"]:
            lines.append(f"  drift: {host['drift']}")
    return lines


def register(cli: click.Group) -> None:
    @cli.group("fleet")
    def fleet() -> None:
        """The hosts sharing one configuration (fleet plugin)."""

    @fleet.command("status")
    @click.option("--json", "as_json", is_flag=True, help="Print JSON.")
    @pass_kernel
    async def status(kernel: Kernel, as_json: bool) -> None:
        """List every host and worker: config version, plugins running and installed, last heartbeat, refusals, drift.

        Exit status 1 when a host is not on the fleet's version.
        """
        store = store_of(kernel)
        if store is None:
            raise click.ClickException("fleet mode is off: set [fleet] enabled = true with a PostgreSQL storage.url")
        found = await store.status()
        if as_json:
            click.echo(json.dumps(found, indent=2, sort_keys=True, default=str))
        else:
            for line in describe(found):
                click.echo(line)
        if any(not host["in_sync"] for host in found["hosts"]):
            raise SystemExit(1)
