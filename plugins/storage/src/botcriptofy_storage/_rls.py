"""PostgreSQL row-level security: tenant rows stay invisible to other tenants, even to raw SQL and injected SQL.

Every tenant table of the current schema gets row-level security enabled and forced, with one policy::

    <tenant column> = NULLIF(current_setting('app.tenant_id', true), '')::<column type>

A tenant table is one with a ``tenant_id`` column, or one whose model declares the column that scopes it
(``__table_args__ = {"info": {"tenant_column": "id"}}``; ``None`` opts a ``tenant_id`` table out).
Each tenant session sets ``app.tenant_id`` for its transaction. Nothing a session can set turns the
policy off: system-wide work bypasses it only by *being* another role — a connection of its own
(``storage.system_url``) as a role with ``BYPASSRLS``, or, in development, a superuser login that
tenant sessions leave for ``rls_role`` for the length of each transaction.

The policy DDL runs in migrations only (``botcriptofy db upgrade`` or ``auto_upgrade``), and only for
the tables whose policy is missing or stale: an upgrade with nothing to change issues no DDL and
takes no table lock, so workers restarting under load never queue behind (or deadlock with) traffic.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection

POLICY = "botcriptofy_tenant"
# Policies of earlier versions, dropped when met (the first one honoured a session setting, app.system).
OLD_POLICIES = ("botcriptofy_tenant_isolation",)
TENANT_COLUMN = "tenant_id"
TENANT_COLUMN_INFO = "tenant_column"
_LOCK = "SELECT pg_advisory_xact_lock(hashtext('botcriptofy.storage.rls'))"
# Signed tenant ids: the key lives in a table only its owner reads; a SECURITY DEFINER function checks signatures.
KEY_TABLE = "botcriptofy_rls_key"
FUNCTION = "botcriptofy_tenant"
_DML = ("SELECT", "INSERT", "UPDATE", "DELETE")
# Whether the login can ignore row-level security: a superuser or BYPASSRLS role, or a member of one.
PRIVILEGED_LOGIN = (
    "SELECT EXISTS (SELECT 1 FROM pg_roles r WHERE pg_has_role(current_user, r.oid, 'MEMBER') AND (r.rolsuper OR r.rolbypassrls))"
)


def _quote(connection: Connection, name: str) -> str:
    return connection.dialect.identifier_preparer.quote_identifier(name)


def declared_tenant_columns(metadatas: Iterable[Any]) -> dict[str, str | None]:
    """Table name -> scoping column declared in ``Table.info["tenant_column"]`` (None: not a tenant table)."""
    declared: dict[str, str | None] = {}
    for metadata in metadatas:
        for table in getattr(metadata, "tables", {}).values():
            if TENANT_COLUMN_INFO in table.info:
                column = table.info[TENANT_COLUMN_INFO]
                declared[table.name] = str(column) if column else None
    return declared


@dataclass(frozen=True, slots=True)
class TenantTable:
    name: str
    column: str
    column_type: str
    enabled: bool = False
    forced: bool = False
    policy: str | None = None  # the policy's comment: "column=<column>", with ";signed" when it checks signed tenant ids
    stale_policies: tuple[str, ...] = ()

    def expected(self, signed: bool) -> str:
        return f"column={self.column}" + (";signed" if signed else "")

    @property
    def secured(self) -> bool:
        """Row-level security in force with this plugin's policy (signed or not)."""
        return self.enabled and self.forced and self.policy in (self.expected(False), self.expected(True)) and not self.stale_policies

    @property
    def signed(self) -> bool:
        return self.secured and self.policy == self.expected(True)

    def current(self, signed: bool) -> bool:
        return self.secured and self.policy == self.expected(signed)


def tenant_tables(connection: Connection, declared: Mapping[str, str | None] | None = None) -> list[TenantTable]:
    """Every ordinary or partitioned table of the current schema that holds tenant rows, with its row-level security state."""
    declared = declared or {}
    rows = connection.execute(
        text(
            "SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), c.relrowsecurity, c.relforcerowsecurity, "
            "coalesce((SELECT array_agg(p.polname::text || '=' || coalesce(obj_description(p.oid, 'pg_policy'), '')) "
            "          FROM pg_policy p WHERE p.polrelid = c.oid), '{}') "
            "FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped "
            "WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind IN ('r', 'p') "
            "ORDER BY c.relname, a.attnum"
        )
    ).all()
    found: dict[str, TenantTable] = {}
    for name, column, column_type, enabled, forced, policies in rows:
        wanted = declared.get(name, TENANT_COLUMN)
        if wanted is None or column != wanted:
            continue
        named = dict(entry.split("=", 1) for entry in policies)
        found[name] = TenantTable(
            name,
            column,
            column_type,
            enabled,
            forced,
            named.get(POLICY),
            tuple(p for p in named if p in OLD_POLICIES),
        )
    return [found[name] for name in sorted(found)]


def missing_privileges(connection: Connection, role: str) -> list[str]:
    """Tables and sequences of the current schema on which ``role`` lacks the privileges sessions need."""
    tables = " AND ".join(f"has_table_privilege(:role, c.oid, '{privilege}')" for privilege in _DML)
    rows = connection.execute(
        text(
            f"SELECT c.relname FROM pg_class c WHERE c.relnamespace = current_schema()::regnamespace AND c.relname <> '{KEY_TABLE}' AND ("
            f"(c.relkind IN ('r', 'p', 'v') AND NOT ({tables})) OR "
            "(c.relkind = 'S' AND NOT (has_sequence_privilege(:role, c.oid, 'USAGE') AND has_sequence_privilege(:role, c.oid, 'UPDATE')))"
            ") ORDER BY c.relname"
        ),
        {"role": role},
    )
    return [name for (name,) in rows]


def role_exists(connection: Connection, role: str) -> bool:
    return connection.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :role"), {"role": role}).first() is not None


def can_switch_to(connection: Connection, role: str) -> bool:
    """Whether the login role may ``SET ROLE`` to ``role`` (a member of it, or a superuser)."""
    return bool(
        connection.execute(
            text(
                "SELECT pg_has_role(current_user, r.oid, 'MEMBER') OR (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) "
                "FROM pg_roles r WHERE r.rolname = :role"
            ),
            {"role": role},
        ).scalar()
    )


def derive_key(secret: str) -> bytes:
    """The key that signs tenant ids, derived from the ``rls_secret`` setting."""
    return hashlib.sha256(b"botcriptofy-rls-key:" + secret.encode()).digest()


def sign_tenant(key: bytes, tenant: str, backend_pid: int) -> str:
    """The signature of ``tenant`` for one server connection: sha256(key | tenant '|' pid | key), as the database recomputes it."""
    return hashlib.sha256(key + f"{tenant}|{backend_pid}".encode() + key).hexdigest()


def key_state(connection: Connection, key: bytes | None) -> tuple[bool, bool, list[str]]:
    """``(function current, key stored and equal, roles other than the owner with privileges on the key table)``."""
    function = connection.execute(text(f"SELECT obj_description(to_regprocedure('{FUNCTION}()'), 'pg_proc')")).scalar() == "v1"
    if connection.execute(text(f"SELECT to_regclass('{KEY_TABLE}')")).scalar() is None:
        return function, key is None, []
    stored = connection.execute(text(f"SELECT key FROM {KEY_TABLE} WHERE id = 1")).scalar()
    leaked = connection.execute(
        text(
            f"SELECT DISTINCT a.grantee::regrole::text FROM pg_class c, aclexplode(c.relacl) a WHERE c.oid = '{KEY_TABLE}'::regclass "
            "AND a.grantee <> c.relowner AND a.grantee <> 0"
        )
    ).scalars()
    return function, (stored is None and key is None) or (key is not None and stored == key), list(leaked)


@dataclass
class SecurityPlan:
    """What an upgrade must change; empty when row-level security is already in place."""

    tables: list[TenantTable] = field(default_factory=list)
    create_role: bool = False
    join_role: bool = False
    grant: list[str] = field(default_factory=list)
    function: bool = False
    key: bool = False
    revoke: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.tables or self.create_role or self.join_role or self.grant or self.function or self.key or self.revoke)


def plan_row_level_security(
    connection: Connection, declared: Mapping[str, str | None], role: str, *, manage_role: bool, key: bytes | None = None
) -> SecurityPlan:
    """Read-only: what :func:`apply_row_level_security` would change."""
    signed = key is not None
    plan = SecurityPlan(tables=[table for table in tenant_tables(connection, declared) if not table.current(signed)])
    function, stored, leaked = key_state(connection, key)
    plan.function, plan.key, plan.revoke = signed and not function, not stored, leaked
    if role:
        exists = role_exists(connection, role)
        if manage_role:
            plan.create_role = not exists
            plan.join_role = not exists or not can_switch_to(connection, role)
        if exists or manage_role:
            current = connection.execute(text("SELECT current_user")).scalar()
            if role != current:
                plan.grant = missing_privileges(connection, role) if exists else ["every table"]
    return plan


def _store_key(connection: Connection, key: bytes | None) -> None:
    connection.execute(text(f"CREATE TABLE IF NOT EXISTS {KEY_TABLE} (id integer PRIMARY KEY CHECK (id = 1), key bytea NOT NULL)"))
    connection.execute(text(f"DELETE FROM {KEY_TABLE}"))
    if key is not None:
        connection.execute(text(f"INSERT INTO {KEY_TABLE} (id, key) VALUES (1, :key)"), {"key": key})


def _revoke_key(connection: Connection) -> None:
    """Nobody but the owner reads the key table (default privileges and schema-wide grants reach it too)."""
    if connection.execute(text(f"SELECT to_regclass('{KEY_TABLE}')")).scalar() is None:
        return
    connection.execute(text(f"REVOKE ALL ON {KEY_TABLE} FROM PUBLIC"))
    for grantee in key_state(connection, None)[2]:
        connection.execute(text(f"REVOKE ALL ON {KEY_TABLE} FROM {_quote(connection, grantee)}"))


def _create_function(connection: Connection) -> None:
    schema = _quote(connection, connection.execute(text("SELECT current_schema()")).scalar_one())
    setting = "current_setting('app.tenant_id', true)"
    connection.execute(
        text(
            f"CREATE OR REPLACE FUNCTION {schema}.{FUNCTION}() RETURNS text LANGUAGE sql STABLE SECURITY DEFINER "
            "SET search_path = pg_catalog, pg_temp AS $$ "
            f"SELECT CASE WHEN NULLIF({setting}, '') IS NULL THEN NULL "
            f"WHEN encode(sha256(k.key || convert_to({setting} || '|' || pg_backend_pid()::text, 'UTF8') || k.key), 'hex') "
            f"= current_setting('app.tenant_sig', true) THEN {setting} END "
            f"FROM (SELECT key FROM {schema}.{KEY_TABLE} WHERE id = 1) AS k $$"
        )
    )
    connection.execute(text(f"COMMENT ON FUNCTION {schema}.{FUNCTION}() IS 'v1'"))


def _ensure_role(connection: Connection, role: str, plan: SecurityPlan) -> None:
    """Create ``role`` (NOLOGIN) when missing and let the login role switch to it (development, one login for everything)."""
    quoted = _quote(connection, role)
    if plan.create_role:
        # Roles are cluster-wide: two databases upgrading at once may both try to create it.
        connection.execute(
            text(
                "DO $$ BEGIN "
                f"IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{role}') THEN CREATE ROLE {quoted} NOLOGIN; END IF; "
                "EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$"
            )
        )
    if not can_switch_to(connection, role):
        connection.execute(text(f"GRANT {quoted} TO CURRENT_USER"))


def _grant(connection: Connection, role: str) -> None:
    quoted = _quote(connection, role)
    schema = _quote(connection, connection.execute(text("SELECT current_schema()")).scalar_one())
    connection.execute(text(f"GRANT USAGE ON SCHEMA {schema} TO {quoted}"))
    connection.execute(text(f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schema} TO {quoted}"))
    connection.execute(text(f"GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA {schema} TO {quoted}"))
    connection.execute(text(f"ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {quoted}"))
    connection.execute(text(f"ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO {quoted}"))


def _secure(connection: Connection, table: TenantTable, signed: bool) -> None:
    name = _quote(connection, table.name)
    column = _quote(connection, table.column)
    tenant = f"(SELECT {FUNCTION}())" if signed else "NULLIF(current_setting('app.tenant_id', true), '')"
    rule = f"{column} = {tenant}::{table.column_type}"
    if not table.enabled:
        connection.execute(text(f"ALTER TABLE {name} ENABLE ROW LEVEL SECURITY"))
    if not table.forced:  # also the table owner, should the service ever log in as it
        connection.execute(text(f"ALTER TABLE {name} FORCE ROW LEVEL SECURITY"))
    for old in table.stale_policies:
        connection.execute(text(f"DROP POLICY IF EXISTS {_quote(connection, old)} ON {name}"))
    if table.policy != table.expected(signed):
        connection.execute(text(f"DROP POLICY IF EXISTS {POLICY} ON {name}"))
        connection.execute(text(f"CREATE POLICY {POLICY} ON {name} USING ({rule}) WITH CHECK ({rule})"))
        connection.execute(text(f"COMMENT ON POLICY {POLICY} ON {name} IS '{table.expected(signed)}'"))


def apply_row_level_security(
    connection: Connection,
    declared: Mapping[str, str | None] | None = None,
    role: str = "",
    *,
    manage_role: bool = True,
    key: bytes | None = None,
) -> list[str]:
    """Bring row-level security up to date in the caller's transaction; return the tenant tables.

    Reads first and changes only what is missing, so a second call issues no DDL at all. With
    ``manage_role`` (the migrations run as the service's own login), ``role`` is created and joined when
    needed; otherwise it is only granted the tables, when it exists. With ``key`` (from ``rls_secret``)
    the policies accept only tenant ids signed with it, for the connection that sets them.
    """
    declared = declared or {}
    plan = plan_row_level_security(connection, declared, role, manage_role=manage_role, key=key)
    if plan:
        connection.execute(text(_LOCK))
        plan = plan_row_level_security(connection, declared, role, manage_role=manage_role, key=key)  # another worker may have done it
        if role and (plan.create_role or plan.join_role):
            _ensure_role(connection, role, plan)
        if role and plan.grant:
            _grant(connection, role)
        if plan.key:
            _store_key(connection, key)
        if plan.key or plan.grant or plan.revoke:
            _revoke_key(connection)
        if plan.function:
            _create_function(connection)
        for table in plan.tables:
            _secure(connection, table, key is not None)
    return [table.name for table in tenant_tables(connection, declared)]
