"""PostgreSQL privileges on the audit tables: the application may only INSERT and SELECT.

Storage grants its row-level-security role every privilege on every table after each upgrade, and
operators may grant an application role the same; so the plugin normalises the audit tables'
privileges after migrations and at every start: for PUBLIC and every role other than the owner,
UPDATE, DELETE and TRUNCATE are revoked, and roles that can use the schema's tables get SELECT and
INSERT. The triggers refuse UPDATE, DELETE and TRUNCATE for every role, the owner included.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from sqlalchemy import exc, text
from sqlalchemy.engine import Connection

log = logging.getLogger("botcriptofy.audit")

TABLES = ("audit_entries", "audit_checkpoints", "audit_purge_permits")
APPEND_TABLES = ("audit_entries", "audit_checkpoints")
SEQUENCES = ("audit_entries_id_seq", "audit_checkpoints_id_seq")


def application_roles(connection: Connection) -> list[str]:
    """Roles other than a table's owner holding a privilege on some table of the current schema (quoted names)."""
    rows = connection.execute(
        text(
            "SELECT DISTINCT quote_ident(r.rolname) FROM pg_class c CROSS JOIN LATERAL aclexplode(c.relacl) a "
            "JOIN pg_roles r ON r.oid = a.grantee "
            "WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind IN ('r', 'p') AND a.grantee <> c.relowner "
            "ORDER BY 1"
        )
    )
    return [name for (name,) in rows]


def secure_tables(connection: Connection, extra_roles: list[str] | None = None) -> bool:
    """Normalise the audit tables' privileges; return False (and change nothing) when the login role does not own them."""
    owns = connection.execute(
        text(
            "SELECT pg_has_role(current_user, c.relowner, 'USAGE') FROM pg_class c "
            "WHERE c.relname = 'audit_entries' AND c.relnamespace = current_schema()::regnamespace"
        )
    ).scalar()
    if not owns:
        return False
    # GRANT and REVOKE rewrite the tables' catalog rows: two sessions doing it at once (a start-up and the
    # config-applied handler, or two workers starting) fail with "tuple concurrently updated". One at a time.
    connection.execute(text("SELECT pg_advisory_xact_lock(hashtext('botcriptofy_audit.grants'))"))
    roles = sorted(set(application_roles(connection)) | {connection.dialect.identifier_preparer.quote(r) for r in extra_roles or () if r})
    grantees = ", ".join(["PUBLIC", *roles])
    tables = ", ".join(TABLES)
    connection.execute(text(f"REVOKE UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER ON {tables} FROM {grantees}"))
    connection.execute(text(f"REVOKE INSERT ON audit_purge_permits FROM {grantees}"))
    if roles:
        members = ", ".join(roles)
        connection.execute(text(f"GRANT SELECT, INSERT ON {', '.join(APPEND_TABLES)} TO {members}"))
        connection.execute(text(f"GRANT SELECT ON audit_purge_permits TO {members}"))
        connection.execute(text(f"GRANT USAGE, SELECT ON SEQUENCE {', '.join(SEQUENCES)} TO {members}"))
    return True


# Operators' own GRANT/REVOKE statements do not take the advisory lock above; one running at the same moment
# makes ours fail with "tuple concurrently updated" (SQLSTATE XX000), and trying again is the cure.
ATTEMPTS = 5


async def secure(database: Any) -> None:
    """Apply :func:`secure_tables` on PostgreSQL as the login role; nothing on SQLite."""
    if database.dialect != "postgresql":
        return
    for attempt in range(1, ATTEMPTS + 1):
        try:
            async with database.engine.begin() as connection:
                await connection.run_sync(secure_tables, [getattr(database, "rls_role", "")])
            return
        except exc.DBAPIError as error:
            if "tuple concurrently updated" not in str(error) or attempt == ATTEMPTS:
                raise
            log.info("audit table privileges changed by another session at the same time; trying again (%d/%d)", attempt, ATTEMPTS)
            await asyncio.sleep(0.05 * attempt)
