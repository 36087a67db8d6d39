"""``botcriptofy observability rules|dashboard``: print the shipped Prometheus alert rules and Grafana dashboard."""

from __future__ import annotations

from importlib.resources import files

import click


def asset(name: str) -> str:
    """The text of a file shipped in the package's ``assets`` directory."""
    return files("botcriptofy_observability").joinpath("assets", name).read_text(encoding="utf-8")


def register(cli: click.Group) -> None:
    @cli.group("observability")
    def group() -> None:
        """Alert rules and dashboards for the service's metrics."""

    @group.command("rules")
    def rules() -> None:
        """Print the Prometheus alert rules (save them as a rule file, check them with `promtool check rules`)."""
        click.echo(asset("alerts.yml"), nl=False)

    @group.command("dashboard")
    def dashboard() -> None:
        """Print the Grafana dashboard JSON (import it in Grafana, data source: your Prometheus)."""
        click.echo(asset("dashboard.json"), nl=False)
