"""PostgreSQL roles for production, and the report of ``botcriptofy db check-security``.

Three login roles, so that SQL injected into a tenant session has nothing to switch to:

* the **owner** owns the tables and runs migrations (``storage.migrations_url``); it has ``BYPASSRLS`` so that
  data migrations see every tenant, and the service never logs in as it;
* the **app** role is the service's login (``storage.url``): table privileges only — not a superuser, not an
  owner, no ``BYPASSRLS``, a member of neither other role. Tenant sessions run as it, held by the policies;
* the **system** role serves system-wide work (``storage.system_url``: ``db.session(system=True)``, the outbox
  relay): table privileges and ``BYPASSRLS``, no ownership.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy import text
from sqlalchemy.engine import Connection

from ._migrate import collect
from ._rls import KEY_TABLE, TenantTable, declared_tenant_columns, tenant_tables
from ._settings import separate_url

if TYPE_CHECKING:
    from botcriptofy import Kernel

    from ._state import StorageState

ROLE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def create_roles_sql(owner: str, app: str, system: str, database: str) -> list[str]:
    """Idempotent statements, run by a superuser in ``database``, that create or correct the three roles and their grants."""
    for name in (owner, app, system):
        if not ROLE_NAME.match(name):
            raise ValueError(f"role name {name!r} must match {ROLE_NAME.pattern}")
    if len({owner, app, system}) != 3:
        raise ValueError("the owner, app and system roles must be three different roles")
    db = '"' + database.replace('"', '""') + '"'
    statements = [
        f"DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{name}') THEN CREATE ROLE {name}; END IF; END $$"
        for name in (owner, app, system)
    ]
    statements += [
        f"ALTER ROLE {owner} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION BYPASSRLS",
        f"ALTER ROLE {app} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS",
        f"ALTER ROLE {system} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION BYPASSRLS",
        # Nothing the app role can SET ROLE to: no membership in the owner or the system role (nor the reverse).
        *(
            f"DO $$ BEGIN IF pg_has_role('{member}', '{group}', 'MEMBER') AND NOT (SELECT rolsuper FROM pg_roles "
            f"WHERE rolname = '{member}') THEN REVOKE {group} FROM {member}; END IF; END $$"
            for member, group in ((app, owner), (app, system), (system, owner), (system, app), (owner, app), (owner, system))
        ),
        f"GRANT CONNECT ON DATABASE {db} TO {owner}, {app}, {system}",
        f"GRANT USAGE, CREATE ON SCHEMA public TO {owner}",
        f"GRANT USAGE ON SCHEMA public TO {app}, {system}",
        # Hand what exists to the owner (sequences owned by a column follow their table).
        "DO $$ DECLARE r record; BEGIN "
        "FOR r IN SELECT c.oid::regclass AS name, c.relkind FROM pg_class c "
        "WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'S') "
        f"AND c.relowner <> '{owner}'::regrole AND NOT (c.relkind = 'S' AND EXISTS (SELECT 1 FROM pg_depend d "
        "WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype IN ('a', 'i'))) "
        "LOOP EXECUTE format('ALTER %s %s OWNER TO %I', CASE r.relkind WHEN 'S' THEN 'SEQUENCE' WHEN 'v' THEN 'VIEW' "
        f"WHEN 'm' THEN 'MATERIALIZED VIEW' ELSE 'TABLE' END, r.name, '{owner}'); END LOOP; END $$",
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {app}, {system}",
        f"GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO {app}, {system}",
        f"ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {app}, {system}",
        f"ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA public GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO {app}, {system}",
        # The key that signs tenant ids (storage.rls_secret) stays the owner's alone.
        f"DO $$ BEGIN IF to_regclass('public.{KEY_TABLE}') IS NOT NULL THEN REVOKE ALL ON public.{KEY_TABLE} FROM PUBLIC, {app}, {system}; "
        "END IF; END $$",
    ]
    return statements


@dataclass
class Login:
    """What a login role of one connection can do about row-level security."""

    purpose: str
    role: str
    superuser: bool
    bypassrls: bool
    owns: list[str] = field(default_factory=list)
    can_become: list[str] = field(default_factory=list)

    @property
    def bypasses(self) -> bool:
        return self.superuser or self.bypassrls

    def describe(self) -> str:
        traits = [
            "superuser" if self.superuser else "not superuser",
            "BYPASSRLS" if self.bypassrls else "no BYPASSRLS",
            f"owns {len(self.owns)} table(s)" if self.owns else "owns no table",
        ]
        if self.can_become:
            traits.append(f"may SET ROLE to {', '.join(self.can_become)}")
        return f"{self.purpose}: role {self.role} ({', '.join(traits)})"


def inspect_login(connection: Connection, purpose: str) -> Login:
    role, superuser, bypassrls = connection.execute(
        text("SELECT rolname, rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user")
    ).one()
    owns = connection.execute(
        text(
            "SELECT c.relname FROM pg_class c WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind IN ('r', 'p') "
            "AND pg_has_role(current_user, c.relowner, 'MEMBER') ORDER BY c.relname"
        )
    ).scalars()
    become = connection.execute(
        text(
            "SELECT r.rolname FROM pg_roles r WHERE r.rolname <> current_user AND pg_has_role(current_user, r.oid, 'MEMBER') "
            "AND (r.rolsuper OR r.rolbypassrls OR EXISTS (SELECT 1 FROM pg_class c WHERE c.relowner = r.oid "
            "AND c.relnamespace = current_schema()::regnamespace)) ORDER BY r.rolname"
        )
    ).scalars()
    return Login(purpose, role, bool(superuser), bool(bypassrls), list(owns), [] if superuser else list(become))


@dataclass
class SecurityReport:
    """The roles and policies ``check-security`` prints, and what fails it."""

    dialect: str
    service: Login | None = None
    system: Login | None = None
    system_separate: bool = False
    migrations: Login | None = None
    rls_role: str = ""
    tables: list[TenantTable] = field(default_factory=list)
    key_readers: list[str] = field(default_factory=list)
    signing: bool = False  # storage.rls_secret is set

    def lines(self) -> list[str]:
        if self.dialect != "postgresql":
            return ["database: SQLite -- no row-level security; tenant isolation is the ORM scoping only (use PostgreSQL in production)"]
        out = []
        for login in (self.service, self.system, self.migrations):
            if login is not None:
                out.append(login.describe())
        if self.rls_role:
            out.append(f"tenant sessions switch to role {self.rls_role} for each transaction (storage.rls_role)")
        signed = sum(table.signed for table in self.tables)
        out.append(f"tenant tables: {len(self.tables)}, {signed} of them accepting only signed tenant ids (storage.rls_secret)")
        for table in self.tables:
            state = ("policy in force, signed tenant ids" if table.signed else "policy in force") if table.secured else "NO POLICY"
            out.append(f"  {table.name:<40} {table.column:<12} {state}")
        return out

    def problems(self, *, production: bool) -> tuple[list[str], list[str]]:
        """``(failures, warnings)``: what fails the check now, and what fails it only in production."""
        failures = [f"tenant table {t.name} has no row-level security policy on {t.column}" for t in self.tables if not t.secured]
        if self.dialect != "postgresql" or self.service is None or self.system is None:
            return failures, []
        risky: list[str] = []
        service = self.service
        if service.superuser:
            risky.append(f"the service connects as {service.role}, a superuser: injected SQL can RESET ROLE and read every tenant")
        if service.bypassrls:
            risky.append(f"the service connects as {service.role}, which has BYPASSRLS")
        if service.owns:
            risky.append(f"the service connects as {service.role}, which owns {', '.join(service.owns[:5])}: it could drop the policies")
        if service.can_become:
            risky.append(f"the service login {service.role} may SET ROLE to {', '.join(service.can_become)}")
        if not self.system_separate:
            risky.append("system sessions share the service connection: set storage.system_url to a login with BYPASSRLS")
        elif self.system.superuser or self.system.owns:
            risky.append(f"system sessions connect as {self.system.role}, a superuser or table owner: give them a role with BYPASSRLS only")
        if self.key_readers:
            failures.append(f"{', '.join(self.key_readers)} may read {KEY_TABLE}, the key that signs tenant ids")
        mismatched = [table.name for table in self.tables if table.secured and table.signed != self.signing]
        if mismatched:
            failures.append(
                f"the policies of {', '.join(mismatched[:5])} "
                + (
                    "expect signed tenant ids but storage.rls_secret is not set"
                    if not self.signing
                    else "do not check signed tenant ids yet"
                )
                + ": run `botcriptofy db upgrade` with the service's storage.rls_secret"
            )
        elif any(not table.signed for table in self.tables):
            risky.append("tenant ids are not signed (storage.rls_secret): SQL injected into a tenant session can name another tenant")
        if not self.system.bypasses:
            failures.append(
                f"system sessions connect as {self.system.role}, which cannot bypass row-level security: they see no tenant rows"
            )
        if production:
            return failures + risky, []
        return failures, risky


async def security_report(state: StorageState, kernel: Kernel) -> SecurityReport:
    """Inspect the service, system and migrations connections and every tenant table."""
    database = state.database
    report = SecurityReport(database.dialect, rls_role=database.rls_role, signing=bool(state.settings.rls_secret.get_secret_value()))
    if database.dialect != "postgresql":
        return report
    plans = await collect(kernel)
    declared = declared_tenant_columns(plan.metadata for plan in plans)
    async with database.engine.connect() as connection:
        report.service = await connection.run_sync(inspect_login, "service (storage.url)")
        report.tables = await connection.run_sync(tenant_tables, declared)
        report.key_readers = list(
            (
                await connection.execute(
                    text(
                        f"SELECT r.rolname FROM pg_roles r WHERE to_regclass('{KEY_TABLE}') IS NOT NULL AND r.rolname = current_user "
                        f"AND NOT r.rolsuper AND has_table_privilege(r.oid, '{KEY_TABLE}', 'SELECT')"
                    )
                )
            ).scalars()
        )
    if database.system_engine is not None:
        report.system_separate = True
        async with database.system_engine.connect() as connection:
            report.system = await connection.run_sync(inspect_login, "system sessions (storage.system_url)")
    else:
        report.system = report.service
    migrations_url = separate_url(state.settings.migrations_url, database.engine.url)
    if migrations_url is not None:
        engine, _ = state._migrations_engine()
        try:
            async with engine.connect() as connection:
                report.migrations = await connection.run_sync(inspect_login, "migrations (storage.migrations_url)")
        finally:
            await engine.dispose()
    return report
