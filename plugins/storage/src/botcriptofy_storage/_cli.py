"""``botcriptofy db ...``: upgrade and inspect every enabled plugin's schema, write revisions, watch the outbox."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click
from alembic.util import CommandError
from sqlalchemy import func, select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from botcriptofy import pass_kernel

from ._engine import create_engine
from ._migrate import MigrationError, Revisions, collect, make_revision
from ._outbox import FAILED, PENDING, deliveries, utcnow
from ._security import create_roles_sql, security_report
from ._settings import normalise_url, separate_url
from ._state import STATE, StorageState, maintenance

if TYPE_CHECKING:
    from botcriptofy import Kernel


def _state(kernel: Kernel) -> StorageState:
    state = kernel.stash.get(STATE, None)
    if state is None or "storage" not in kernel.plugins:
        raise click.ClickException("the storage plugin is not running: remove it from plugins.disabled and check storage.url")
    return state


def _describe(revisions: Revisions) -> str:
    current = ", ".join(revisions.current) or "(empty)"
    heads = ", ".join(revisions.heads) or "(no revisions)"
    status = "up to date" if revisions.up_to_date else f"behind head {heads}"
    return f"{revisions.plugin:<20} {current:<24} {status}"


def register(cli: click.Group) -> None:
    @cli.group("db")
    @click.pass_context
    def db(ctx: click.Context) -> None:
        """Database schema of every enabled plugin (storage plugin)."""
        token = maintenance.set(True)
        ctx.call_on_close(lambda: maintenance.reset(token))

    @db.command("upgrade")
    @pass_kernel
    async def upgrade(kernel: Kernel) -> None:
        """Run every enabled plugin's pending migrations (each plugin has its own version table)."""
        try:
            results = await _state(kernel).migrate(kernel, only_new=False)
        except MigrationError as error:
            raise click.ClickException(str(error)) from None
        for result in results:
            before = ", ".join(result.before) or "(empty)"
            click.echo(f"{result.plugin:<20} {before} -> {', '.join(result.current) or '(empty)'}")
        if not results:
            click.echo("no enabled plugin declares migrations")

    @db.command("current")
    @pass_kernel
    async def current(kernel: Kernel) -> None:
        """Show each enabled plugin's revision in the database and whether it is at head."""
        results = await _state(kernel).revisions(kernel)
        for result in results:
            click.echo(_describe(result))
        if any(not result.up_to_date for result in results):
            raise click.ClickException("some plugins have pending migrations: run `botcriptofy db upgrade`")

    @db.command("create-roles")
    @click.option("--owner", default="botcriptofy_owner", show_default=True, help="Login that owns the tables and runs migrations.")
    @click.option("--app", "app", default="botcriptofy_app", show_default=True, help="The service's login (storage.url).")
    @click.option(
        "--system",
        "system",
        default="botcriptofy_system",
        show_default=True,
        help="Login of system-wide work (storage.system_url), with BYPASSRLS.",
    )
    @click.option(
        "--admin-url", default=None, help="A superuser's URL for this database (default: storage.migrations_url, else storage.url)."
    )
    @click.option("--print-sql", is_flag=True, help="Print the statements instead of running them.")
    @pass_kernel
    async def create_roles(kernel: Kernel, owner: str, app: str, system: str, admin_url: str | None, print_sql: bool) -> None:
        """Create or correct the PostgreSQL roles of production: table owner, service login, system login (idempotent)."""
        state = _state(kernel)
        if state.database.dialect != "postgresql":
            raise click.ClickException("roles exist on PostgreSQL only; storage.url names a SQLite database")
        url = (
            make_url(normalise_url(admin_url))
            if admin_url
            else (separate_url(state.settings.migrations_url, state.database.engine.url) or state.database.engine.url)
        )
        try:
            statements = create_roles_sql(owner, app, system, url.database or "")
        except ValueError as error:
            raise click.ClickException(str(error)) from None
        if print_sql:
            for statement in statements:
                click.echo(statement + ";")
            return
        engine = create_engine(url, state.settings.model_copy(update={"pool_size": 1, "max_overflow": 0}))
        try:
            async with engine.begin() as connection:
                for statement in statements:
                    await connection.execute(text(statement))
        except DBAPIError as error:
            raise click.ClickException(f"creating the roles failed (connect as a superuser, --admin-url): {error.orig}") from None
        finally:
            await engine.dispose()
        click.echo(
            f"roles ready in database {url.database}: owner {owner} (migrations, BYPASSRLS), app {app} (storage.url), "
            f"system {system} (storage.system_url, BYPASSRLS); set their passwords with ALTER ROLE ... PASSWORD"
        )

    @db.command("check-security")
    @click.option(
        "--production/--no-production",
        default=None,
        help="Judge the roles as for production (default: when the settings environment is 'production').",
    )
    @pass_kernel
    async def check_security(kernel: Kernel, production: bool | None) -> None:
        """Report the database roles and row-level security policies; fail where tenant isolation can be bypassed."""
        state = _state(kernel)
        judged = production if production is not None else kernel.env == "production"
        report = await security_report(state, kernel)
        for line in report.lines():
            click.echo(line)
        failures, warnings = report.problems(production=judged)
        for warning in warnings:
            click.echo(f"warning (fails in production): {warning}")
        if failures:
            raise click.ClickException("tenant isolation can be bypassed: " + "; ".join(failures))
        click.echo("ok" + (" (judged as production)" if judged else ""))

    @db.command("revision")
    @click.argument("plugin")
    @click.option("-m", "--message", required=True, help="What the revision does.")
    @click.option("--autogenerate", is_flag=True, help="Compare the plugin's metadata with the database and write the difference.")
    @click.option("--rev-id", default=None, help="The revision id (default: a random one).")
    @pass_kernel
    async def revision(kernel: Kernel, plugin: str, message: str, autogenerate: bool, rev_id: str | None) -> None:
        """Write a new migration script into PLUGIN's migrations directory (for plugin authors)."""
        state = _state(kernel)
        plans = {plan.plugin: plan for plan in await collect(kernel)}
        if plugin not in plans:
            raise click.ClickException(f"plugin '{plugin}' is not enabled or declares no migrations (known: {', '.join(plans) or 'none'})")
        try:
            async with state.database.engine.connect() as connection:
                paths = await connection.run_sync(make_revision, plans[plugin], message, autogenerate=autogenerate, rev_id=rev_id)
        except (CommandError, FileNotFoundError, ValueError) as error:
            raise click.ClickException(str(error)) from None
        for path in paths:
            click.echo(f"wrote {path}")

    @db.command("outbox")
    @click.option("--retry-failed", is_flag=True, help="Queue every failed delivery again.")
    @pass_kernel
    async def outbox(kernel: Kernel, retry_failed: bool) -> None:
        """Count outbox deliveries by status; optionally retry the failed ones."""
        state = _state(kernel)
        async with state.database.session(system=True) as session:
            if retry_failed:
                result = await session.execute(
                    update(deliveries).where(deliveries.c.status == FAILED).values(status=PENDING, attempts=0, next_attempt_at=utcnow())
                )
                click.echo(f"queued {result.rowcount} failed deliveries again")  # type: ignore[attr-defined]
            rows = (await session.execute(select(deliveries.c.status, func.count()).group_by(deliveries.c.status))).all()
        counts: dict[str, int] = {status: count for status, count in rows}
        click.echo(" ".join(f"{status}={counts.get(status, 0)}" for status in ("pending", "delivered", "failed")))
