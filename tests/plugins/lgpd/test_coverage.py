"""Every table of every enabled plugin that holds personal data is covered by its plugin's privacy hooks."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import sqlalchemy as sa

import botcriptofy_observability
import botcriptofy_ratelimit
from botcriptofy import Kernel, Migrations, hookimpl

from .conftest import PLUGINS, settings

# Columns that hold personal data or identify a person (directly, or as a pseudonym the law still covers).
PERSONAL = {
    "user_id",
    "email",
    "name",
    "phone",
    "tax_id",
    "ip",
    "client_address",
    "user_agent",
    "subject",
    "actor_id",
    "tenant_id",
    "tenant",
    "stripe_customer_id",
    "customer_id",
    "payload",
    "details",
    "envelope_tenant_id",
    "address",
    "target",
    "recipient",
    "telegram_user_id",
    "chat_id",
    "username",
    "url",
}


async def uncovered(kernel: Kernel) -> list[str]:
    """Tables in the database with personal columns whose owning plugin lacks a privacy hook, and tables no plugin owns."""
    owners: dict[str, str] = {}
    for impl in kernel.hook.register_migrations.get_hookimpls():
        declared: Migrations | None = await kernel.call_plugin(impl.plugin_name, "register_migrations", kernel=kernel)
        if declared is not None and declared.metadata is not None:
            owners.update({name: impl.plugin_name for name in declared.metadata.tables})
    exporters = {impl.plugin_name for impl in kernel.hook.export_subject_data.get_hookimpls()}
    erasers = {impl.plugin_name for impl in kernel.hook.erase_subject_data.get_hookimpls()}

    def inspect(connection: Any) -> dict[str, list[str]]:
        inspector = sa.inspect(connection)
        return {table: [c["name"] for c in inspector.get_columns(table)] for table in inspector.get_table_names()}

    async with kernel.database().engine.connect() as connection:
        tables = await connection.run_sync(inspect)
    problems = []
    for table, columns in sorted(tables.items()):
        if table.startswith("alembic_version_"):
            continue
        owner = owners.get(table)
        if owner is None:
            problems.append(f"{table}: no enabled plugin declares it in its migrations' metadata")
            continue
        personal = sorted(PERSONAL & set(columns))
        if personal and not (owner in exporters and owner in erasers):
            problems.append(
                f"{table} (plugin {owner}) holds {', '.join(personal)} but {owner} lacks export_subject_data or erase_subject_data"
            )
    return problems


async def test_every_table_with_personal_data_has_privacy_hooks(database_url, kernel_harness):
    plugins = {**PLUGINS, "ratelimit": botcriptofy_ratelimit, "observability": botcriptofy_observability}
    harness = await kernel_harness(plugins=plugins, settings=settings(database_url))
    assert set(harness.kernel.plugins) >= set(plugins) >= {"notifications", "telegram", "webhooks"}
    assert await uncovered(harness.kernel) == []


class Careless:
    """A plugin with a table of e-mail addresses and no privacy hooks."""

    def __init__(self) -> None:
        self.metadata = sa.MetaData()
        sa.Table("careless_contacts", self.metadata, sa.Column("id", sa.Integer, primary_key=True), sa.Column("email", sa.String(320)))

    @hookimpl
    def register_migrations(self, kernel: Kernel) -> Migrations:
        from pathlib import Path

        return Migrations(directory=Path(__file__).parent / "careless_migrations", metadata=self.metadata)


async def test_the_check_fails_for_a_plugin_that_forgets_them(database_url, kernel_harness):
    plugins = {**PLUGINS, "careless": Careless()}
    harness = await kernel_harness(plugins=plugins, settings=settings(database_url))
    assert await uncovered(harness.kernel) == [
        "careless_contacts (plugin careless) holds email but careless lacks export_subject_data or erase_subject_data"
    ]


def without_privacy(module: Any) -> SimpleNamespace:
    """The plugin ``module`` with every hook implementation except the two privacy hooks."""
    return SimpleNamespace(**{n: getattr(module, n) for n in dir(module) if not n.startswith("__") and not n.endswith("_subject_data")})


async def test_the_check_fails_for_the_channel_plugins_without_their_hooks(database_url, kernel_harness):
    import botcriptofy_notifications
    import botcriptofy_telegram
    import botcriptofy_webhooks

    stripped = {
        name: without_privacy(m)
        for name, m in [
            ("notifications", botcriptofy_notifications),
            ("telegram", botcriptofy_telegram),
            ("webhooks", botcriptofy_webhooks),
        ]
    }
    harness = await kernel_harness(plugins={**PLUGINS, **stripped}, settings=settings(database_url))
    flagged = {problem.split(" ")[0] for problem in await uncovered(harness.kernel)}
    # (the leases tables are flagged too: their lease ``name`` column looks personal to this check)
    assert all(table.startswith(("notifications_", "telegram_", "webhooks_")) for table in flagged)
    assert flagged >= {
        "notifications_deliveries",
        "notifications_inbox",
        "notifications_preferences",
        "telegram_approval_messages",
        "telegram_link_codes",
        "telegram_links",
        "webhooks_deliveries",
        "webhooks_endpoints",
    }
