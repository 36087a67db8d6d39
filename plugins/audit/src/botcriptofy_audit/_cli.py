"""``botcriptofy audit ...``: verify the chains, sign checkpoints, export, purge by retention, make keys."""

from __future__ import annotations

import json
import sys

import click

from botcriptofy import Kernel, pass_kernel

from . import _chain, _service
from ._signing import new_key_entry, public_entry
from ._state import settings_of, state_of


@click.group()
def audit() -> None:
    """The tamper-evident audit trail (the audit plugin)."""


@audit.command("verify")
@click.option("--tenant", default=None, help="Verify only this tenant's chain ('platform' for the platform's).")
@click.option("--json", "as_json", is_flag=True, help="Print the whole report as JSON.")
@pass_kernel(needs=("database", "record_audit"))  # storage and audit only: no other plugin starts
async def verify_command(kernel: Kernel, tenant: str | None, as_json: bool) -> None:
    """Check every entry's hash, the links between entries and the signed checkpoints; exit 1 at the first change."""
    report = await _chain.verify(kernel.database(), state_of(kernel).keyring, chain=tenant)
    if as_json:
        click.echo(json.dumps(report, indent=2))
    for chain in report["chains"]:
        if not as_json:
            click.echo(
                f"{chain['chain']}: {chain['entries']} entries, {chain['checkpoints']} checkpoints, "
                + ("valid" if chain["valid"] else f"BROKEN -- {chain['problem']['detail']}")
            )
    if not report["valid"]:
        problem = report["first_problem"]
        raise click.ClickException(f"chain '{problem['chain']}': {problem['detail']} (kind {problem['kind']}, seq {problem['seq']})")


@audit.command("checkpoint")
@pass_kernel(needs=("database", "record_audit"))  # storage and audit only: no other plugin starts
async def checkpoint_command(kernel: Kernel) -> None:
    """Sign the head of every chain that moved since its last checkpoint."""
    signed = await _chain.checkpoint_heads(kernel.database(), state_of(kernel).keyring)
    click.echo(f"signed {signed} checkpoint(s)")


@audit.command("export")
@click.option("--chain", default=None, help="Only this chain ('platform' or a tenant id).")
@click.option("--since", default=None, help="ISO 8601 UTC time, inclusive.")
@click.option("--until", default=None, help="ISO 8601 UTC time, exclusive.")
@pass_kernel(needs=("database", "record_audit"))  # storage and audit only: no other plugin starts
async def export_command(kernel: Kernel, chain: str | None, since: str | None, until: str | None) -> None:
    """Write entries as signed JSON Lines to standard output."""
    async for line in _service.export_lines(kernel.database(), state_of(kernel).keyring, chain=chain, since=since, until=until):
        sys.stdout.write(line)


@audit.command("purge")
@pass_kernel(needs=("database", "record_audit"))  # storage and audit only: no other plugin starts
async def purge_command(kernel: Kernel) -> None:
    """Remove entries past audit.retention_days (never before their legal minimum), anchored by a signed checkpoint."""
    removed = await _service.purge(kernel.database(), state_of(kernel).keyring, retention_days=settings_of(kernel).retention_days)
    click.echo(f"removed {sum(removed.values())} entries from {len(removed)} chain(s)")


@audit.command("new-key")
@click.argument("key_id")
def new_key_command(key_id: str) -> None:
    """Print a new signing key entry (for audit.signing_keys, first position) and its public entry (for audit.verify_keys)."""
    entry = new_key_entry(key_id)
    click.echo(f"signing key (secret): {entry}")
    click.echo(f"public key:           {public_entry(entry)}")
