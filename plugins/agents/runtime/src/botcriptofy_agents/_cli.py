"""``botcriptofy agents eval AGENT CASES.jsonl``: score an agent per provider, exit 1 under the thresholds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from botcriptofy import pass_kernel


@click.group()
def agents() -> None:
    """Department agents: evaluate them on recorded cases."""


@agents.command("eval")
@click.argument("agent")
@click.argument("cases", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--provider",
    "providers",
    multiple=True,
    type=click.Choice(["rules", "ollama"]),
    help="Providers to score (default: rules and the agent's).",
)
@click.option("--model", default=None, help="Model for the ollama provider (default: the agent's setting).")
@click.option("--host", default=None, help="Ollama server (default: the agent's setting).")
@click.option("--timeout", "budget", type=float, default=None, help="Seconds per decision (default: the agent's setting).")
@click.option("--min-schema-valid", type=float, default=0.0, show_default=True, help="Lowest schema-valid rate (0-1) of every provider.")
@click.option("--min-accuracy", type=float, default=0.0, show_default=True, help="Lowest action accuracy (0-1) of every provider.")
@click.option("--max-fallbacks", type=int, default=None, help="Most fallbacks to the rules of every provider.")
@click.option("--max-p95-ms", type=float, default=None, help="Highest p95 decision latency in milliseconds.")
@click.option("--json", "as_json", is_flag=True, help="Print the reports as JSON.")
@pass_kernel
async def eval_(
    kernel: Any,
    agent: str,
    cases: Path,
    providers: tuple[str, ...],
    model: str | None,
    host: str | None,
    budget: float | None,
    min_schema_valid: float,
    min_accuracy: float,
    max_fallbacks: int | None,
    max_p95_ms: float | None,
    as_json: bool,
) -> None:
    from ._eval import evaluate, load_cases
    from ._runner import registered_agents, settings_of

    found = {a.name: a for a in registered_agents(kernel)}
    spec = found.get(agent) or found.get(f"agent_{agent}")
    if spec is None:
        raise click.ClickException(f"no agent '{agent}' is enabled; enabled agents: {', '.join(found) or 'none'}")
    try:
        loaded = load_cases(cases, spec.name)
    except ValueError as error:
        raise click.ClickException(str(error)) from None
    if not loaded:
        raise click.ClickException(f"{cases} holds no case for {spec.name}")
    base = settings_of(kernel, spec)
    overrides = {k: v for k, v in {"model": model, "host": host, "timeout": budget}.items() if v is not None}
    wanted = providers or tuple(dict.fromkeys(("rules", base.provider)))
    failed: list[str] = []
    reports = []
    for provider in wanted:
        report = await evaluate(kernel, spec, base.model_copy(update={**overrides, "provider": provider}), loaded)
        reports.append(report)
        if report.schema_valid_rate < min_schema_valid:
            failed.append(f"{provider}: schema-valid rate {report.schema_valid_rate:.3f} < {min_schema_valid}")
        if report.accuracy < min_accuracy:
            failed.append(f"{provider}: accuracy {report.accuracy:.3f} < {min_accuracy}")
        if max_fallbacks is not None and report.fallback_count > max_fallbacks:
            failed.append(f"{provider}: {report.fallback_count} fallbacks > {max_fallbacks}")
        if max_p95_ms is not None and report.percentile(95) > max_p95_ms:
            failed.append(f"{provider}: p95 {report.percentile(95):.1f} ms > {max_p95_ms}")
    if as_json:
        click.echo(json.dumps({"agent": spec.name, "reports": [r.to_dict() for r in reports], "failed": failed}, indent=2))
    else:
        click.echo(f"{spec.name}: {len(loaded)} cases from {cases}")
        for report in reports:
            d = report.to_dict()
            reasons = ", ".join(f"{k} {v}" for k, v in d["fallback_reasons"].items()) or "none"
            click.echo(
                f"  {d['provider']:<7} schema-valid {d['schema_valid_rate']:.1%}  accuracy {d['accuracy']:.1%}  "
                f"fallbacks {d['fallbacks']} ({reasons})  p50 {d['p50_ms']:.1f} ms  p95 {d['p95_ms']:.1f} ms"
            )
            for miss in report.misses[:10]:
                click.echo(f"    line {miss['line']}: expected {miss['expected']}, got {miss['got']} ({miss['source']})")
        for line in failed:
            click.echo(f"below threshold: {line}", err=True)
    if failed:
        raise click.exceptions.Exit(1)
