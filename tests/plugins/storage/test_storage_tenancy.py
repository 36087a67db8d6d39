"""Tenant isolation: ORM scoping on every dialect, row-level security on PostgreSQL."""

from __future__ import annotations

import uuid

import asyncpg
import pytest
from sqlalchemy import String, Uuid, delete, func, insert, select, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import DeclarativeBase, Mapped, aliased, mapped_column, selectinload

import botcriptofy_storage
from botcriptofy_storage import TenantScopeError

from .storage_sample import Comment, Country, Note


async def _seed(db):
    """Two tenants, two notes each (one comment per note), and a platform table row."""
    ids = {}
    for tenant in ("acme", "globex"):
        async with db.session(tenant_id=tenant) as session:
            notes = [Note(body=f"{tenant} {n}") for n in (1, 2)]
            session.add_all(notes)
            await session.flush()
            session.add_all([Comment(note_id=note.id, body=f"on {note.body}") for note in notes])
            ids[tenant] = [note.id for note in notes]
    async with db.session() as session:
        session.add(Country(code="BR", name="Brasil"))
    return ids


async def test_orm_queries_see_only_the_session_tenant(storage_kernel):
    harness = await storage_kernel()
    db = harness.kernel.database()
    ids = await _seed(db)
    async with db.session(tenant_id="acme") as session:
        assert sorted((await session.scalars(select(Note.body))).all()) == ["acme 1", "acme 2"]
        assert await session.scalar(select(func.count()).select_from(Note)) == 2
        assert await session.scalar(select(func.count(Comment.id))) == 2
        joined = (await session.execute(select(Note.body, Comment.body).join(Comment, Comment.note_id == Note.id))).all()
        assert len(joined) == 2 and all(row[0].startswith("acme") for row in joined)
        other = aliased(Note)
        assert await session.scalar(select(func.count()).select_from(other)) == 2
        in_subquery = (await session.scalars(select(Comment.body).where(Comment.note_id.in_(select(Note.id))))).all()
        assert sorted(in_subquery) == ["on acme 1", "on acme 2"]
        # Guessing another tenant's ids finds nothing.
        for guessed in ids["globex"]:
            assert await session.get(Note, guessed) is None
        assert (await session.scalars(select(Note).where(Note.id.in_(ids["globex"])))).all() == []
        # Relationship loads are scoped too.
        note = (await session.scalars(select(Note).options(selectinload(Note.comments)).order_by(Note.id))).first()
        assert [c.body for c in note.comments] == ["on acme 1"]
        lazy = await session.get(Note, ids["acme"][1])
        assert [c.body for c in await lazy.awaitable_attrs.comments] == ["on acme 2"]
        # Platform tables are shared.
        assert (await session.scalars(select(Country.code))).all() == ["BR"]


async def test_orm_update_and_delete_touch_only_the_session_tenant(storage_kernel):
    harness = await storage_kernel()
    db = harness.kernel.database()
    ids = await _seed(db)
    async with db.session(tenant_id="acme") as session:
        result = await session.execute(update(Note).values(body="changed"))
        assert result.rowcount == 2
        result = await session.execute(delete(Comment).where(Comment.note_id.in_(ids["globex"])))
        assert result.rowcount == 0
    async with db.session(system=True) as session:
        changed = select(Note.tenant_id, func.count()).where(Note.body == "changed").group_by(Note.tenant_id)
        bodies = dict((await session.execute(changed)).all())
        assert bodies == {"acme": 2}
        assert await session.scalar(select(func.count()).select_from(Comment)) == 4


async def test_new_rows_get_the_session_tenant_and_other_tenants_rows_are_refused(storage_kernel):
    harness = await storage_kernel()
    db = harness.kernel.database()
    async with db.session(tenant_id="acme") as session:
        note = Note(body="stamped")
        session.add(note)
    assert note.tenant_id == "acme"
    with pytest.raises(TenantScopeError, match="tenant globex in a session of tenant acme"):
        async with db.session(tenant_id="acme") as session:
            session.add(Note(body="smuggled", tenant_id="globex"))
    with pytest.raises(TenantScopeError, match="refused"):
        async with db.session(tenant_id="acme") as session:
            mine = await session.get(Note, note.id)
            mine.tenant_id = "globex"
    with pytest.raises(TenantScopeError, match="refused"):
        async with db.session(tenant_id="acme") as session:
            mine = await session.get(Note, note.id)
            mine.tenant_id = None
    async with db.session(system=True) as session:
        assert (await session.scalars(select(Note.tenant_id))).all() == ["acme"]


async def test_orm_bulk_insert_and_update_statements_keep_to_the_session_tenant(storage_kernel):
    harness = await storage_kernel()
    db = harness.kernel.database()
    async with db.session(tenant_id="acme") as session:
        await session.execute(insert(Note), [{"body": "bulk 1"}, {"body": "bulk 2", "tenant_id": "acme"}])
        await session.execute(insert(Note).values(body="values"))
    for statement, rows in [
        (insert(Note), [{"body": "x", "tenant_id": "globex"}]),
        (insert(Note).values(body="x", tenant_id="globex"), None),
        (insert(Note).values([{"body": "x", "tenant_id": "acme"}, {"body": "y", "tenant_id": "globex"}]), None),
        (insert(Note).values([{"body": "x"}, {"body": "y"}]), None),
        (update(Note).values(tenant_id="globex"), None),
    ]:
        with pytest.raises(TenantScopeError):
            async with db.session(tenant_id="acme") as session:
                await session.execute(statement, rows)
    async with db.session(system=True) as session:
        assert sorted((await session.execute(select(Note.tenant_id, Note.body))).all()) == [
            ("acme", "bulk 1"), ("acme", "bulk 2"), ("acme", "values")]


async def test_a_session_without_tenant_refuses_tenant_tables(storage_kernel):
    harness = await storage_kernel()
    db = harness.kernel.database()
    await _seed(db)
    async with db.session() as session:
        assert (await session.scalars(select(Country.name))).all() == ["Brasil"]
        with pytest.raises(TenantScopeError, match="sample_notes"):
            await session.scalars(select(Note))
        with pytest.raises(TenantScopeError, match=r"db\.session\(tenant_id=\.\.\.\)"):
            await session.execute(select(func.count()).select_from(Comment))
    with pytest.raises(TenantScopeError, match="writes a tenant-owned Note"):
        async with db.session() as session:
            session.add(Note(body="orphan", tenant_id="acme"))
    # A tenant-owned error is a PermissionError for plugins that cannot import this one.
    assert issubclass(TenantScopeError, PermissionError)


async def test_a_system_session_is_unscoped(storage_kernel):
    harness = await storage_kernel()
    db = harness.kernel.database()
    await _seed(db)
    # Read then write: the write lock from the start (SQLite), or a concurrent commit by the relay makes the write fail.
    async with db.session(system=True, write_lock=True) as session:
        assert await session.scalar(select(func.count()).select_from(Note)) == 4
        session.add(Note(body="platform", tenant_id="initech"))
    async with db.session(tenant_id="initech") as session:
        assert (await session.scalars(select(Note.body))).all() == ["platform"]


class _UuidBase(DeclarativeBase):
    pass


class Wallet(_UuidBase):
    """A tenant-owned class whose tenant_id is a UUID column."""

    __tablename__ = "test_wallets"

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    label: Mapped[str] = mapped_column(String(50))


async def test_uuid_tenant_columns_are_scoped_too(storage_kernel):
    harness = await storage_kernel()
    db = harness.kernel.database()
    async with db.engine.begin() as connection:
        await connection.run_sync(_UuidBase.metadata.create_all)
    mine, theirs = uuid.uuid4(), uuid.uuid4()
    async with db.session(tenant_id=str(mine).upper()) as session:
        session.add_all([Wallet(label="stamped"), Wallet(label="explicit", tenant_id=mine)])
    async with db.session(tenant_id=theirs) as session:
        session.add(Wallet(label="theirs"))
    async with db.session(tenant_id=mine) as session:
        wallets = (await session.scalars(select(Wallet).order_by(Wallet.id))).all()
        assert [(w.label, w.tenant_id) for w in wallets] == [("stamped", mine), ("explicit", mine)]
    with pytest.raises(TenantScopeError, match="is not a UUID"):
        async with db.session(tenant_id="acme") as session:
            await session.scalars(select(Wallet))


async def test_uuid_tenant_ids_are_accepted_as_strings(storage_kernel):
    harness = await storage_kernel()
    db = harness.kernel.database()
    tenant = uuid.uuid4()
    async with db.session(tenant_id=tenant) as session:
        session.add(Note(body="uuid"))
    async with db.session(tenant_id=str(tenant)) as session:
        assert (await session.scalars(select(Note.tenant_id))).all() == [str(tenant)]


# -- PostgreSQL row-level security ------------------------------------------------------------


async def test_raw_sql_sees_only_the_tenant_rows_on_postgres(postgres_url, kernel_harness):
    from .storage_sample import SamplePlugin

    harness = await kernel_harness(plugins={"storage": botcriptofy_storage, "sample": SamplePlugin()},
                                   settings={"storage": {"url": postgres_url}})
    db = harness.kernel.database()
    ids = await _seed(db)
    async with db.session(tenant_id="acme") as session:
        rows = (await session.execute(text("SELECT tenant_id, body FROM sample_notes"))).all()
        assert sorted(rows) == [("acme", "acme 1"), ("acme", "acme 2")]
        guessed = (await session.execute(text("SELECT * FROM sample_comments WHERE note_id = ANY(:ids)"),
                                         {"ids": ids["globex"]})).all()
        assert guessed == []
        changed = await session.execute(text("UPDATE sample_notes SET body = 'hijacked' WHERE id = ANY(:ids)"), {"ids": ids["globex"]})
        assert changed.rowcount == 0
        assert (await session.execute(text("SELECT current_user"))).scalar() == "botcriptofy_app"
    with pytest.raises(DBAPIError, match="row-level security"):
        async with db.session(tenant_id="acme") as session:
            await session.execute(text("INSERT INTO sample_notes (tenant_id, body) VALUES ('globex', 'smuggled')"))
    async with db.session() as session:
        assert (await session.execute(text("SELECT count(*) FROM sample_notes"))).scalar() == 0
    async with db.session(system=True) as session:
        assert (await session.execute(text("SELECT count(*) FROM sample_notes"))).scalar() == 4
    # The policy is in place on every tenant table, forced for the table owner too.
    async with db.engine.connect() as connection:
        flags = (await connection.execute(text(
            "SELECT relname, relrowsecurity, relforcerowsecurity FROM pg_class WHERE relname LIKE 'sample_%' AND relkind = 'r' "
            "ORDER BY relname"))).all()
    assert flags == [("sample_comments", True, True), ("sample_countries", False, False), ("sample_notes", True, True),
                     ("sample_readings", True, True)]


async def test_tables_created_outside_migrations_can_be_secured(postgres_url, kernel_harness):
    harness = await kernel_harness(plugins={"storage": botcriptofy_storage}, settings={"storage": {"url": postgres_url}})
    db = harness.kernel.database()
    async with db.engine.begin() as connection:
        await connection.execute(text("CREATE TABLE adhoc (id serial PRIMARY KEY, tenant_id uuid NOT NULL, v text)"))
        await connection.execute(text("INSERT INTO adhoc (tenant_id, v) VALUES ('00000000-0000-0000-0000-000000000001', 'a'), "
                                      "('00000000-0000-0000-0000-000000000002', 'b')"))
    assert await db.enable_row_level_security() == ["adhoc"]
    async with db.session(tenant_id="00000000-0000-0000-0000-000000000002") as session:
        assert (await session.execute(text("SELECT v FROM adhoc"))).scalars().all() == ["b"]
    with pytest.raises(DBAPIError, match="uuid"):  # a tenant id that is not a UUID fails closed
        async with db.session(tenant_id="acme") as session:
            await session.execute(text("SELECT v FROM adhoc"))


async def test_sessions_keep_the_login_role_until_an_upgrade_creates_the_rls_role(postgres_url, kernel_harness):
    from .storage_sample import SamplePlugin

    role = f"bcf_test_role_{uuid.uuid4().hex[:8]}"
    harness = await kernel_harness(plugins={"storage": botcriptofy_storage, "sample": SamplePlugin()},
                                   settings={"storage": {"url": postgres_url, "auto_upgrade": False, "relay_enabled": False,
                                                         "rls_role": role}})
    db = harness.kernel.database()
    try:
        assert db.rls_role == ""
        async with db.session(tenant_id="acme") as session:
            assert (await session.execute(text("SELECT current_user"))).scalar() == "postgres"
        await harness.kernel.stash[botcriptofy_storage._state.STATE].migrate(harness.kernel)
        assert db.rls_role == role
        async with db.session(tenant_id="acme") as session:
            assert (await session.execute(text("SELECT current_user"))).scalar() == role
            assert (await session.execute(text("SELECT count(*) FROM sample_notes"))).scalar() == 0
    finally:
        await harness.close()
        connection = await asyncpg.connect(postgres_url)
        try:
            await connection.execute(f"DROP OWNED BY {role}")
            await connection.execute(f"DROP ROLE {role}")
        finally:
            await connection.close()


@pytest.fixture
async def owner_url(postgres_url):
    """The test database handed to a fresh non-superuser login role that owns it; the role is dropped afterwards."""
    role = f"bcf_owner_{uuid.uuid4().hex[:8]}"
    name = postgres_url.rsplit("/", 1)[1]
    admin = await asyncpg.connect(postgres_url)
    try:
        await admin.execute(f"CREATE ROLE {role} LOGIN")
        await admin.execute(f'ALTER DATABASE "{name}" OWNER TO {role}')
    finally:
        await admin.close()
    yield postgres_url.replace("postgresql://postgres@", f"postgresql://{role}@", 1)
    admin = await asyncpg.connect(postgres_url)
    try:
        await admin.execute(f'ALTER DATABASE "{name}" OWNER TO postgres')
        await admin.execute(f"REASSIGN OWNED BY {role} TO postgres")
        await admin.execute(f"DROP OWNED BY {role}")
        await admin.execute(f"DROP ROLE {role}")
    finally:
        await admin.close()


async def test_a_non_superuser_table_owner_is_held_by_forced_row_level_security(owner_url, kernel_harness):
    from .storage_sample import SamplePlugin

    harness = await kernel_harness(plugins={"storage": botcriptofy_storage, "sample": SamplePlugin()},
                                   settings={"storage": {"url": owner_url, "rls_role": ""}})
    db = harness.kernel.database()
    await _seed(db)
    async with db.session(tenant_id="globex") as session:
        assert (await session.execute(text("SELECT count(*) FROM sample_notes"))).scalar() == 2
        assert (await session.execute(text("SELECT current_user"))).scalar().startswith("bcf_owner_")
    # No session setting opens the policy (app.system once did): system-wide work needs a login that bypasses
    # row-level security (storage.system_url), which a table owner under FORCE is not.
    async with db.session(system=True) as session:
        assert (await session.execute(text("SELECT count(*) FROM sample_notes"))).scalar() == 0


async def test_a_login_role_that_cannot_use_the_rls_role_gets_a_clear_error(owner_url, kernel_harness):
    harness = await kernel_harness(plugins={"storage": botcriptofy_storage}, settings={"storage": {"url": owner_url}})
    error = harness.runtime.plugins["storage"].error
    assert error is not None and "row-level security could not be set up" in error and "rls_role" in error
    assert "must have admin option on role" in error


def test_tenant_ids_are_coerced_to_the_columns_python_type():
    """A UUID column (directly or under a TypeDecorator) gets uuid.UUID; text columns and as_uuid=False keep the text."""
    from sqlalchemy.types import TypeDecorator

    from botcriptofy_storage._tenancy import TenantScopeError, coerce_tenant

    class WrappedUuid(TypeDecorator):
        impl = Uuid
        cache_ok = True

    class _Base(DeclarativeBase):
        pass

    def model(name: str, column_type: object) -> type:
        return type(name, (_Base,), {"__tablename__": name.lower(), "id": mapped_column(String, primary_key=True),
                                     "tenant_id": mapped_column(column_type)})

    tenant = "7f1c6f5e-3b0a-4a39-9f7e-2f3d2b6a9c11"
    assert coerce_tenant(model("Direct", Uuid), tenant) == uuid.UUID(tenant)
    assert coerce_tenant(model("Wrapped", WrappedUuid), tenant) == uuid.UUID(tenant)
    assert coerce_tenant(model("AsText", Uuid(as_uuid=False)), tenant) == tenant
    assert coerce_tenant(model("Plain", String), tenant) == tenant
    with pytest.raises(TenantScopeError, match="not a UUID"):
        coerce_tenant(model("Strict", Uuid), "acme")
