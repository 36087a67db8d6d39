"""A sample plugin that owns tables, as a plugin author would write one: models, migrations, events.

Its migrations live in ``storage_sample_migrations/`` (an Alembic script directory: ``versions/`` and
``script.py.mako``); the storage plugin runs them with the version table ``alembic_version_sample``.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from sqlalchemy import DateTime, ForeignKey, String
from sqlalchemy.ext.asyncio import AsyncAttrs
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from botcriptofy import Envelope, Event, EventHandler, Migrations, hookimpl

MIGRATIONS = Path(__file__).parent / "storage_sample_migrations"


class Base(AsyncAttrs, DeclarativeBase):
    pass


class Note(Base):
    """Tenant-owned: it has a tenant_id column."""

    __tablename__ = "sample_notes"

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64), index=True)
    body: Mapped[str] = mapped_column(String(200))
    comments: Mapped[list[Comment]] = relationship(back_populates="note", order_by="Comment.id")


class Comment(Base):
    __tablename__ = "sample_comments"

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64), index=True)
    note_id: Mapped[int] = mapped_column(ForeignKey("sample_notes.id", ondelete="CASCADE"))
    body: Mapped[str] = mapped_column(String(200))
    note: Mapped[Note] = relationship(back_populates="comments")


class Country(Base):
    """Platform data: no tenant_id, readable by every session."""

    __tablename__ = "sample_countries"

    code: Mapped[str] = mapped_column(String(2), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))


class Reading(Base):
    """A time series (made one by migration 0002 through the storage plugin's helper)."""

    __tablename__ = "sample_readings"

    id: Mapped[int] = mapped_column(primary_key=True)
    time: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    value: Mapped[float]


class NoteWritten(Event):
    event_type = "sample.note_written"
    note_id: int
    body: str


class SamplePlugin:
    """Owns the sample tables and subscribes two handlers to NoteWritten."""

    def __init__(self, *, failures: int = 0) -> None:
        self.seen: list[Envelope] = []
        self.audited: list[Envelope] = []
        self.failures = failures

    @hookimpl
    def register_migrations(self, kernel):
        return Migrations(directory=MIGRATIONS, metadata=Base.metadata)

    @hookimpl
    def register_event_handlers(self, kernel):
        async def record(envelope: Envelope) -> None:
            self.seen.append(envelope)

        async def audit(envelope: Envelope) -> None:
            if self.failures > 0:
                self.failures -= 1
                raise RuntimeError("audit log unavailable")
            self.audited.append(envelope)

        return [EventHandler("sample.record", record, events=(NoteWritten,)),
                EventHandler("sample.audit", audit, events=("sample.note_written",))]
