"""PostgreSQL row-level security: tenant rows stay invisible to other tenants even to raw SQL.

For every table of the current schema with a ``tenant_id`` column the plugin enables and forces
row-level security with one policy::

    current_setting('app.system', true) = 'on'
    OR tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::<column type>

Each session sets ``app.tenant_id`` / ``app.system`` for its transaction (``set_config(..., true)``,
the same as ``SET LOCAL``). Superusers and roles with BYPASSRLS ignore policies, so sessions also
switch to ``rls_role`` (``botcriptofy_app`` by default, a NOLOGIN role with table privileges only)
for the length of each transaction. Migrations and DDL keep running as the login role.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.engine import Connection

POLICY = "botcriptofy_tenant_isolation"


def _quote(connection: Connection, name: str) -> str:
    return connection.dialect.identifier_preparer.quote_identifier(name)


def ensure_role(connection: Connection, role: str) -> None:
    """Create ``role`` (NOLOGIN) when missing, let the login role switch to it, and grant it the schema's tables."""
    quoted = _quote(connection, role)
    # Roles are cluster-wide: two databases upgrading at once may both try to create it.
    connection.execute(text(
        "DO $$ BEGIN "
        f"IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{role}') THEN CREATE ROLE {quoted} NOLOGIN; END IF; "
        "EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$"
    ))
    member = connection.execute(text("SELECT pg_has_role(current_user, :role, 'MEMBER') OR "
                                     "(SELECT rolsuper FROM pg_roles WHERE rolname = current_user)"), {"role": role}).scalar()
    if not member:
        connection.execute(text(f"GRANT {quoted} TO CURRENT_USER"))
    schema = _quote(connection, connection.execute(text("SELECT current_schema()")).scalar_one())
    connection.execute(text(f"GRANT USAGE ON SCHEMA {schema} TO {quoted}"))
    connection.execute(text(f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schema} TO {quoted}"))
    connection.execute(text(f"GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA {schema} TO {quoted}"))
    connection.execute(text(f"ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {quoted}"))
    connection.execute(text(f"ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO {quoted}"))


def tenant_tables(connection: Connection) -> list[tuple[str, str]]:
    """Return ``(table, tenant_id type)`` for every ordinary or partitioned table of the current schema with a ``tenant_id`` column."""
    rows = connection.execute(text(
        "SELECT c.relname, format_type(a.atttypid, a.atttypmod) FROM pg_class c "
        "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped "
        "WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind IN ('r', 'p') ORDER BY c.relname"
    ))
    return [(name, type_) for name, type_ in rows]


def enable_row_level_security(connection: Connection, role: str) -> list[str]:
    """Grant ``role`` (when set) and apply the tenant policy to every tenant table; return the tables."""
    connection.execute(text("SELECT pg_advisory_xact_lock(hashtext('botcriptofy.storage.rls'))"))
    if role:
        ensure_role(connection, role)
    tables = tenant_tables(connection)
    for name, column_type in tables:
        table = _quote(connection, name)
        rule = (f"current_setting('app.system', true) = 'on' "
                f"OR tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::{column_type}")
        connection.execute(text(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY"))
        connection.execute(text(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY"))
        connection.execute(text(f"DROP POLICY IF EXISTS {POLICY} ON {table}"))
        connection.execute(text(f"CREATE POLICY {POLICY} ON {table} USING ({rule}) WITH CHECK ({rule})"))
    return [name for name, _ in tables]
