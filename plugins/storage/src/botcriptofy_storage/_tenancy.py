"""Tenant isolation in the ORM: every session knows its tenant, and tenant-owned rows stay with it.

A mapped class is *tenant-owned* when its table has a ``tenant_id`` column. In a session opened
with ``tenant_id=X``:

* every ORM SELECT, UPDATE and DELETE gets ``tenant_id = X`` on each tenant-owned entity it
  reaches (``with_loader_criteria``: joins, subqueries, relationship and eager loads included);
* a new tenant-owned object gets ``tenant_id = X``; writing a row of another tenant is refused.

A session opened with ``system=True`` is unscoped. A session with neither refuses any statement or
flush that touches a tenant-owned table. Raw SQL (``text()``) is not rewritten: on PostgreSQL,
row-level security (see ``_rls``) enforces the same rule inside the database.
"""

from __future__ import annotations

import functools
import re
import uuid
import weakref
from collections.abc import Iterable
from typing import Any

from sqlalchemy import TypeDecorator, Uuid, event, inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Mapper, ORMExecuteState, Session, SessionTransaction, UOWTransaction, mapperlib, registry, with_loader_criteria
from sqlalchemy.sql import visitors
from sqlalchemy.sql.expression import TableClause

from botcriptofy import BotCriptoFyError

from ._engine import BACKEND_PID
from ._rls import sign_tenant

TENANT_COLUMN = "tenant_id"
# Keys of Session.info (read-only for callers).
INFO_TENANT = "botcriptofy.tenant_id"
INFO_SYSTEM = "botcriptofy.system"
INFO_ROLE = "botcriptofy.rls_role"
INFO_KEY = "botcriptofy.rls_key"
INFO_AFTER_COMMIT = "botcriptofy.after_commit"


class TenantScopeError(BotCriptoFyError, PermissionError):
    """A session touched tenant-owned data it is not scoped to."""


class TenantSession(Session):
    """The synchronous session behind every ``AsyncSession`` the storage plugin opens."""


def is_tenant_table(table: Any) -> bool:
    columns = getattr(table, "c", None)
    return columns is not None and TENANT_COLUMN in columns


def is_tenant_mapper(mapper: Mapper[Any]) -> bool:
    return any(is_tenant_table(table) for table in mapper.tables)


# -- which classes are tenant-owned -------------------------------------------------------

_registries: weakref.WeakSet[registry] = weakref.WeakSet()
_classes_cache: weakref.WeakKeyDictionary[registry, tuple[int, tuple[type[Any], ...]]] = weakref.WeakKeyDictionary()
_mapper_count = 0


@event.listens_for(Mapper, "after_mapper_constructed")
def _on_new_mapper(mapper: Mapper[Any], _cls: type[Any]) -> None:
    global _mapper_count
    _mapper_count += 1
    _registries.add(mapper.registry)


def _known_registries() -> Iterable[registry]:
    # Registries that existed before this module was imported (their mappers fired no event).
    for found in getattr(mapperlib, "_all_registries", lambda: ())():
        _registries.add(found)
    return list(_registries)


def _tenant_classes(reg: registry) -> tuple[type[Any], ...]:
    cached = _classes_cache.get(reg)
    if cached is not None and cached[0] == _mapper_count:
        return cached[1]
    classes = tuple(sorted((m.class_ for m in reg.mappers if is_tenant_mapper(m)), key=lambda c: c.__qualname__))
    for cls in classes:
        if TENANT_COLUMN not in inspect(cls).attrs:
            raise TenantScopeError(
                f"{cls.__qualname__} has a tenant_id column but no 'tenant_id' attribute; map the column under "
                "that name so the storage plugin can scope it"
            )
    _classes_cache[reg] = (_mapper_count, classes)
    return classes


def _classes_for(state: ORMExecuteState) -> list[Any]:
    registries = {mapper.registry for mapper in state.all_mappers}
    if state.bind_mapper is not None:
        registries.add(state.bind_mapper.registry)
    if not registries:
        # select(func.count()).select_from(Entity) and friends have no top-level entity: scope every known class.
        registries = set(_known_registries())
    _registries.update(registries)
    return [cls for reg in registries for cls in _tenant_classes(reg)]


def _touched_tenant_tables(statement: Any) -> list[str]:
    names = {element.name for element in visitors.iterate(statement) if isinstance(element, TableClause) and is_tenant_table(element)}
    return sorted(names)


# -- values ---------------------------------------------------------------------------------


def _holds_uuids(cls: Any) -> bool:
    """Whether ``cls.tenant_id`` is a UUID column read as ``uuid.UUID`` (directly or under a TypeDecorator)."""
    column = inspect(cls).columns.get(TENANT_COLUMN)
    if column is None:
        return False
    column_type = column.type
    if isinstance(column_type, TypeDecorator):
        column_type = column_type.impl_instance
    return isinstance(column_type, Uuid) and bool(column_type.as_uuid)


def coerce_tenant(cls: Any, tenant: str) -> Any:
    """Return ``tenant`` as the Python type of ``cls.tenant_id`` (a UUID column gets a ``uuid.UUID``)."""
    if _holds_uuids(cls) and not isinstance(tenant, uuid.UUID):
        try:
            return uuid.UUID(str(tenant))
        except ValueError:
            raise TenantScopeError(f"tenant id {tenant!r} is not a UUID, which {cls.__qualname__}.tenant_id holds") from None
    return tenant


def same_tenant(cls: Any, value: Any, tenant: str) -> bool:
    """Whether ``value`` (a row's tenant_id) is ``tenant``, compared as the column's Python type."""
    try:
        return bool(coerce_tenant(cls, value) == coerce_tenant(cls, tenant))
    except TenantScopeError:
        return str(value) == str(tenant)


@functools.lru_cache(maxsize=8192)
def _criteria(cls: Any, value: Any) -> Any:
    """The loader criteria for one class and tenant (immutable, so one object serves every statement).

    A plain expression rather than a lambda: SQLAlchemy caches a lambda's SQL per code location, so one lambda
    shared by classes whose tenant_id types differ (String, Uuid) would bind every value with the first type.
    """
    return with_loader_criteria(cls, cls.tenant_id == value, include_aliases=True)


# -- session events -------------------------------------------------------------------------


@event.listens_for(TenantSession, "do_orm_execute")
def _scope_statement(state: ORMExecuteState) -> None:
    info = state.session.info
    if info.get(INFO_SYSTEM):
        return
    tenant = info.get(INFO_TENANT)
    if tenant is None:
        touched = _touched_tenant_tables(state.statement)
        if touched:
            raise TenantScopeError(
                f"this session has no tenant but the statement touches tenant-owned table(s) {', '.join(touched)}; "
                "open it with db.session(tenant_id=...) or, for platform jobs, db.session(system=True)"
            )
        return
    if (state.is_insert or state.is_update) and state.is_orm_statement:
        _guard_written_tenant(state, str(tenant))
    if state.is_column_load or not (state.is_select or state.is_update or state.is_delete):
        return
    classes = _classes_for(state)
    if classes:
        state.statement = state.statement.options(*(_criteria(cls, coerce_tenant(cls, tenant)) for cls in classes))


def _guard_written_tenant(state: ORMExecuteState, tenant: str) -> None:
    """ORM INSERT and UPDATE statements: fill in the session's tenant on inserted rows, refuse any other tenant."""
    mapper = state.bind_mapper
    if mapper is None or not is_tenant_mapper(mapper):
        return
    cls = mapper.class_
    name = cls.__qualname__

    def check(value: Any) -> None:
        if value is not None and not same_tenant(cls, value, tenant):
            raise TenantScopeError(f"refused to write a {name} of tenant {value} in a session of tenant {tenant}")

    rows: Any = state.parameters
    if rows:  # session.execute(insert(Model), [{...}, ...]) and bulk UPDATE by primary key
        listed = [rows] if isinstance(rows, dict) else list(rows)
        stamped = []
        for row in listed:
            check(row.get(TENANT_COLUMN))
            stamped.append({**row, TENANT_COLUMN: coerce_tenant(cls, tenant)} if state.is_insert else row)
        state.parameters = stamped[0] if isinstance(rows, dict) else stamped
        return
    # insert(Model).values(...) / update(Model).values(...): look at the values the statement carries.
    statement: Any = state.statement
    bind = state.session.get_bind(mapper=mapper)
    values = statement.compile(dialect=bind.dialect).params
    rows_given = {match.group(1) for key in values if (match := re.fullmatch(r".+_m(\d+)", key))}
    written = {
        match.group(1) or "": value
        for key, value in values.items()
        if (match := re.fullmatch(rf"{TENANT_COLUMN}(?:_m(\d+))?", key)) and (state.is_insert or match.group(1) is None)
    }
    for value in written.values():
        check(value)
    if not state.is_insert or written.keys() >= (rows_given or {""}):
        return
    if rows_given:
        raise TenantScopeError(
            f"this multi-row INSERT into {name} leaves tenant_id out of some rows; set it in every row "
            "or pass the rows as parameters: session.execute(insert(Model), rows)"
        )
    try:
        state.statement = statement.values({TENANT_COLUMN: coerce_tenant(cls, tenant)})
    except Exception as error:
        raise TenantScopeError(
            f"cannot give the rows of this INSERT into {name} the session's tenant; "
            "set tenant_id in the statement or pass the rows as parameters"
        ) from error


@event.listens_for(TenantSession, "before_flush")
def _stamp_tenant(session: Session, _flush: UOWTransaction, _instances: Any) -> None:
    info = session.info
    if info.get(INFO_SYSTEM):
        return
    tenant = info.get(INFO_TENANT)
    for obj in (*session.new, *session.dirty, *session.deleted):
        mapper = inspect(obj).mapper
        if not is_tenant_mapper(mapper):
            continue
        name = type(obj).__qualname__
        if tenant is None:
            raise TenantScopeError(
                f"this session has no tenant but writes a tenant-owned {name}; "
                "open it with db.session(tenant_id=...) or db.session(system=True)"
            )
        cls = type(obj)
        current = getattr(obj, TENANT_COLUMN, None)
        if current is None and obj in session.new:
            setattr(obj, TENANT_COLUMN, coerce_tenant(cls, tenant))
            continue
        if current is None or not same_tenant(cls, current, tenant):
            raise TenantScopeError(f"refused to write a {name} of tenant {current} in a session of tenant {tenant}")
        history = inspect(obj).attrs[TENANT_COLUMN].history
        if any(old is not None and not same_tenant(cls, old, tenant) for old in history.deleted):
            raise TenantScopeError(f"refused to move a {name} from another tenant into tenant {tenant}")


@event.listens_for(TenantSession, "after_begin")
def _configure_transaction(session: Session, _transaction: SessionTransaction, connection: Connection) -> None:
    """On PostgreSQL, give the transaction the session's tenant (and, where configured, the row-level-security role).

    System sessions set nothing: they see every tenant only because their login role bypasses row-level
    security (storage.system_url), never because of a setting that any session could also set.
    """
    if connection.dialect.name != "postgresql" or session.info.get(INFO_SYSTEM):
        return
    tenant = session.info.get(INFO_TENANT)
    role = session.info.get(INFO_ROLE) or ""
    statement = "SELECT set_config('app.tenant_id', :tenant, true)"
    params = {"tenant": "" if tenant is None else str(tenant)}
    key = session.info.get(INFO_KEY)
    if key is not None and tenant is not None:
        statement += ", set_config('app.tenant_sig', :signature, true)"
        params["signature"] = sign_tenant(key, str(tenant), connection.connection.info[BACKEND_PID])
    if role:
        statement += ", set_config('role', :role, true)"
        params["role"] = role
    connection.execute(text(statement), params)


@event.listens_for(TenantSession, "after_commit")
def _after_commit(session: Session) -> None:
    callbacks = session.info.pop(INFO_AFTER_COMMIT, None)
    for callback in callbacks or ():
        callback()


@event.listens_for(TenantSession, "after_rollback")
def _after_rollback(session: Session) -> None:
    session.info.pop(INFO_AFTER_COMMIT, None)


def call_after_commit(session: Session, callback: Any) -> None:
    """Run ``callback()`` once the session's current transaction commits (dropped on rollback)."""
    callbacks: list[Any] = session.info.setdefault(INFO_AFTER_COMMIT, [])
    if callback not in callbacks:
        callbacks.append(callback)
