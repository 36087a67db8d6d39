"""Row-level security that injected SQL cannot switch off: separate PostgreSQL roles, the attacks, create-roles, check-security."""

from __future__ import annotations

import uuid
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, text
from sqlalchemy.exc import DBAPIError

import botcriptofy_auth
import botcriptofy_storage
from botcriptofy import Migrations, hookimpl
from botcriptofy_storage._rls import declared_tenant_columns

from .storage_sample import Note, SamplePlugin

FAST_HASH = {"argon2_time_cost": 1, "argon2_memory_cost": 1024, "argon2_parallelism": 1}


def _as(url: str, role: str) -> str:
    return url.replace("postgresql://postgres@", f"postgresql://{role}@", 1)


@pytest.fixture
async def service_roles(postgres_url, storage_cli):
    """Owner, app and system roles of this test's own (roles are cluster-wide), made by `db create-roles`; dropped afterwards."""
    prefix = f"bcf_{uuid.uuid4().hex[:10]}"
    roles = {"owner": f"{prefix}_owner", "app": f"{prefix}_app", "system": f"{prefix}_system"}
    result = storage_cli(
        {"url": postgres_url}, "db", "create-roles", "--owner", roles["owner"], "--app", roles["app"], "--system", roles["system"]
    )
    assert result.exit_code == 0, result.output
    urls = {name: _as(postgres_url, role) for name, role in roles.items()}
    yield {
        "roles": roles,
        "urls": urls,
        "admin": postgres_url,
        "settings": {
            "url": urls["app"],
            "system_url": urls["system"],
            "migrations_url": urls["owner"],
            "rls_role": "",
            "rls_secret": "a secret of this test run, " + prefix,
            "relay_poll_interval": 0.05,
        },
    }
    admin = await asyncpg.connect(postgres_url)
    try:
        names = list(roles.values())
        await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = ANY($1::text[])", names)
        await admin.execute(f"REASSIGN OWNED BY {roles['owner']} TO postgres")
        for name in names:  # one at a time: the owner's default privileges name the other two
            await admin.execute(f"DROP OWNED BY {name}")
        for name in names:
            await admin.execute(f"DROP ROLE IF EXISTS {name}")
    finally:
        await admin.close()


async def _seed(db) -> None:
    for tenant in ("acme", "globex"):
        async with db.session(tenant_id=tenant) as session:
            session.add_all([Note(body=f"{tenant} 1"), Note(body=f"{tenant} 2")])


async def _count_after(db, attack: str, params: dict | None = None) -> int:
    async with db.session(tenant_id="acme") as session:
        await session.execute(text(attack), params or {})
        return (await session.execute(text("SELECT count(*) FROM sample_notes"))).scalar()


async def test_injected_sql_cannot_leave_the_tenant_with_production_roles(service_roles, storage_cli, kernel_harness):
    settings = service_roles["settings"]
    upgraded = storage_cli(settings, "db", "upgrade")
    assert upgraded.exit_code == 0, upgraded.output
    harness = await kernel_harness(
        plugins={"storage": botcriptofy_storage, "sample": SamplePlugin()}, settings={"storage": {**settings, "auto_upgrade": False}}
    )
    db = harness.kernel.database()
    await _seed(db)
    roles = service_roles["roles"]

    # The attacks that saw every tenant while the service logged in as a superuser and switched roles per transaction.
    assert await _count_after(db, "RESET ROLE") == 2
    assert await _count_after(db, "SELECT set_config('app.system', 'on', true)") == 2
    assert await _count_after(db, "SELECT set_config('role', 'none', false)") == 2
    # Naming another tenant: the tenant id is signed for this server connection, and only the owner reads the key.
    assert await _count_after(db, "SELECT set_config('app.tenant_id', 'globex', true)") == 0
    assert await _count_after(db, "SELECT set_config('app.tenant_id', 'globex', false)") == 0
    assert await _count_after(db, "SELECT set_config('app.tenant_sig', '', true)") == 0
    with pytest.raises(DBAPIError, match="permission denied"):
        await _count_after(db, "SELECT key FROM botcriptofy_rls_key")
    async with db.session(tenant_id="globex") as session:  # the signature of globex's own session works for globex only
        assert (await session.execute(text("SELECT count(*) FROM sample_notes"))).scalar() == 2
    for attack in (
        f"SET ROLE {roles['owner']}",
        f"SET ROLE {roles['system']}",
        "SET ROLE postgres",
        "SET SESSION AUTHORIZATION postgres",
        "ALTER TABLE sample_notes DISABLE ROW LEVEL SECURITY",
        "ALTER TABLE sample_notes NO FORCE ROW LEVEL SECURITY",
        "DROP POLICY botcriptofy_tenant ON sample_notes",
        "CREATE POLICY open ON sample_notes USING (true)",
        "SET row_security = off",
    ):
        with pytest.raises(DBAPIError, match=r"permission denied|must be owner|row-level security|query would be affected"):
            await _count_after(db, attack)
    async with db.session(tenant_id="acme") as session:
        assert (await session.execute(text("SELECT current_user"))).scalar() == roles["app"]
        assert (await session.execute(text("SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user"))).scalar() is False
    with pytest.raises(DBAPIError, match="row-level security"):
        async with db.session(tenant_id="acme") as session:
            await session.execute(text("INSERT INTO sample_notes (tenant_id, body) VALUES ('globex', 'smuggled')"))
    async with db.session() as session:  # neither tenant nor system: no tenant row at all
        assert (await session.execute(text("SELECT count(*) FROM sample_notes"))).scalar() == 0

    # System-wide work runs on its own login, which bypasses the policies without any setting.
    async with db.session(system=True) as session:
        assert (await session.execute(text("SELECT count(*) FROM sample_notes"))).scalar() == 4
        assert (await session.execute(text("SELECT current_user"))).scalar() == roles["system"]
    # The outbox relay (system sessions) delivers events published in tenant sessions.
    assert harness.kernel.outbox() is not None

    report = storage_cli(settings, "db", "check-security", "--production")
    assert report.exit_code == 0, report.output
    assert f"service (storage.url): role {roles['app']} (not superuser, no BYPASSRLS, owns no table)" in report.output
    assert f"system sessions (storage.system_url): role {roles['system']} (not superuser, BYPASSRLS, owns no table)" in report.output
    assert "sample_notes" in report.output and "NO POLICY" not in report.output
    assert "3 of them accepting only signed tenant ids" in report.output
    unsigned = storage_cli({**settings, "rls_secret": ""}, "db", "check-security", "--production")
    assert unsigned.exit_code == 1 and "expect signed tenant ids but storage.rls_secret is not set" in unsigned.output


async def test_a_development_login_that_is_a_superuser_fails_the_production_check(postgres_url, storage_cli):
    assert storage_cli({"url": postgres_url}, "db", "upgrade").exit_code == 0
    relaxed = storage_cli({"url": postgres_url}, "db", "check-security")
    assert relaxed.exit_code == 0, relaxed.output
    assert "warning (fails in production): the service connects as postgres, a superuser" in relaxed.output
    strict = storage_cli({"url": postgres_url}, "db", "check-security", env="production")
    assert strict.exit_code == 1
    assert "a superuser: injected SQL can RESET ROLE" in strict.output
    assert "system sessions share the service connection" in strict.output
    assert "tenant ids are not signed (storage.rls_secret)" in strict.output


async def test_session_settings_no_longer_open_the_policy_in_development(postgres_url, kernel_harness):
    harness = await kernel_harness(
        plugins={"storage": botcriptofy_storage, "sample": SamplePlugin()}, settings={"storage": {"url": postgres_url}}
    )
    db = harness.kernel.database()
    await _seed(db)
    assert await _count_after(db, "SELECT set_config('app.system', 'on', true)") == 2
    async with db.engine.connect() as connection:
        policies = (
            await connection.execute(
                text("SELECT polname, pg_get_expr(polqual, polrelid) FROM pg_policy WHERE polrelid = 'sample_notes'::regclass")
            )
        ).all()
    assert [name for name, _ in policies] == ["botcriptofy_tenant"]
    assert "app.system" not in policies[0][1]


async def test_a_tenant_table_without_policy_fails_the_check(postgres_url, storage_cli):
    assert storage_cli({"url": postgres_url}, "db", "upgrade").exit_code == 0
    admin = await asyncpg.connect(postgres_url)
    try:
        await admin.execute("CREATE TABLE stray (id serial PRIMARY KEY, tenant_id text NOT NULL)")
    finally:
        await admin.close()
    result = storage_cli({"url": postgres_url}, "db", "check-security")
    assert result.exit_code == 1
    assert "stray" in result.output and "NO POLICY" in result.output
    assert "tenant table stray has no row-level security policy on tenant_id" in result.output


async def test_create_roles_is_idempotent_and_prints_its_sql(service_roles, storage_cli):
    roles = service_roles["roles"]
    again = storage_cli(
        {"url": service_roles["admin"]}, "db", "create-roles", "--owner", roles["owner"], "--app", roles["app"], "--system", roles["system"]
    )
    assert again.exit_code == 0, again.output
    printed = storage_cli({"url": service_roles["admin"]}, "db", "create-roles", "--print-sql")
    assert printed.exit_code == 0 and "BYPASSRLS" in printed.output and "NOBYPASSRLS" in printed.output
    refused = storage_cli({"url": service_roles["admin"]}, "db", "create-roles", "--app", "Robert'); DROP TABLE x;--")
    assert refused.exit_code == 1 and "must match" in refused.output
    admin = await asyncpg.connect(service_roles["admin"])
    try:
        rows = {
            r["rolname"]: (r["rolsuper"], r["rolbypassrls"], r["rolcanlogin"])
            for r in await admin.fetch(
                "SELECT rolname, rolsuper, rolbypassrls, rolcanlogin FROM pg_roles WHERE rolname = ANY($1::text[])", list(roles.values())
            )
        }
    finally:
        await admin.close()
    assert rows == {roles["owner"]: (False, True, True), roles["app"]: (False, False, True), roles["system"]: (False, True, True)}


# -- tables scoped by another column ----------------------------------------------------------

scoped = MetaData()
Table("scoped_accounts", scoped, Column("id", String(36), primary_key=True), Column("name", String(50)), info={"tenant_column": "id"})
Table(
    "scoped_events",
    scoped,
    Column("id", Integer, primary_key=True),
    Column("tenant", String(64), nullable=True),
    info={"tenant_column": "tenant"},
)
Table("scoped_platform", scoped, Column("id", Integer, primary_key=True), Column("tenant_id", String(64)), info={"tenant_column": None})


class ScopedPlugin:
    """Declares its tables' scoping columns in ``Table.info``; its (empty) migrations directory carries the metadata."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @hookimpl
    def register_migrations(self, kernel):
        return Migrations(directory=self.directory, metadata=scoped)


async def test_tables_declare_the_column_that_scopes_them(postgres_url, kernel_harness, tmp_path):
    (tmp_path / "scoped" / "versions").mkdir(parents=True)
    admin = await asyncpg.connect(postgres_url)
    try:
        await admin.execute(
            "CREATE TABLE scoped_accounts (id varchar(36) PRIMARY KEY, name varchar(50)); "
            "CREATE TABLE scoped_events (id serial PRIMARY KEY, tenant varchar(64)); "
            "CREATE TABLE scoped_platform (id serial PRIMARY KEY, tenant_id varchar(64)); "
            "INSERT INTO scoped_accounts VALUES ('acme', 'Acme'), ('globex', 'Globex'); "
            "INSERT INTO scoped_events (tenant) VALUES ('acme'), ('globex'), (NULL); "
            "INSERT INTO scoped_platform (tenant_id) VALUES ('acme'), ('globex')"
        )
    finally:
        await admin.close()
    harness = await kernel_harness(
        plugins={"storage": botcriptofy_storage, "scoped": ScopedPlugin(tmp_path / "scoped")}, settings={"storage": {"url": postgres_url}}
    )
    db = harness.kernel.database()
    async with db.session(tenant_id="acme") as session:
        assert (await session.execute(text("SELECT name FROM scoped_accounts"))).scalars().all() == ["Acme"]
        assert (await session.execute(text("SELECT tenant FROM scoped_events"))).scalars().all() == ["acme"]
        assert (await session.execute(text("SELECT count(*) FROM scoped_platform"))).scalar() == 2  # opted out
    async with db.session(system=True) as session:
        assert (await session.execute(text("SELECT count(*) FROM scoped_events"))).scalar() == 3


def test_auth_tenants_and_billing_webhook_events_declare_their_tenant_column():
    import botcriptofy_billing._models as billing_models
    from botcriptofy_auth._models import Base as AuthBase

    declared = declared_tenant_columns([AuthBase.metadata, billing_models.Base.metadata])
    assert declared["auth_tenants"] == "id"
    assert declared["billing_webhook_events"] == "tenant"


async def test_auth_signs_up_and_logs_in_under_production_roles(service_roles, storage_cli, kernel_harness):
    """The whole auth flow on the service role, with its tables (auth_tenants included) under row-level security."""
    settings = service_roles["settings"]
    plugins = {"storage": botcriptofy_storage, "auth": botcriptofy_auth}
    upgraded = storage_cli(settings, "db", "upgrade", plugins=plugins, auth=FAST_HASH)
    assert upgraded.exit_code == 0, upgraded.output
    harness = await kernel_harness(plugins=plugins, settings={"storage": {**settings, "auto_upgrade": False}, "auth": FAST_HASH})
    client = harness.client
    tenants = []
    for email in ("ana@example.com", "bia@example.com"):
        response = await client.post(
            "/v1/auth/signup", json={"email": email, "password": "correct horse battery staple", "name": "Ana", "account_type": "trader"}
        )
        assert response.status_code == 201, response.text
        tenants.append(response.json())
    login = await client.post("/v1/auth/login", json={"email": "ana@example.com", "password": "correct horse battery staple"})
    assert login.status_code == 200, login.text
    me = await client.get("/v1/me", headers={"Authorization": f"Bearer {login.json()['access_token']}"})
    assert me.status_code == 200, me.text
    db = harness.kernel.database()
    mine = me.json()["tenant"]["id"] if "tenant" in me.json() else tenants[0]["tenant"]["id"]
    async with db.session(tenant_id=mine) as session:
        assert (await session.execute(text("SELECT count(*) FROM auth_tenants"))).scalar() == 1
    report = storage_cli(settings, "db", "check-security", "--production", plugins=plugins, auth=FAST_HASH)
    assert report.exit_code == 0, report.output
    assert "auth_tenants" in report.output and "auth_users" in report.output


def test_the_other_urls_must_name_the_same_kind_of_database():
    from pydantic import ValidationError

    from botcriptofy_storage import StorageSettings

    with pytest.raises(ValidationError, match="system_url") as raised:
        StorageSettings(url="postgresql://app@db/x", system_url="sqlite:///x.db")
    assert "same database server kind as storage.url" in str(raised.value)
    settings = StorageSettings(url="postgres://app@db/x", migrations_url="postgresql://owner@db/x")
    assert settings.migrations_url == "postgresql+asyncpg://owner@db/x"
