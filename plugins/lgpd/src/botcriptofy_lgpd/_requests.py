"""Data-subject requests: received, processed step by step (each step audited), answered within the deadline.

``process(kernel, request_id)`` and ``sweep(kernel)`` are idempotent and claim their work with a
conditional update, so any runner may call them: the in-process runner of this plugin, or a
workflows provider running them as durable activities. Exports gather every plugin's
``export_subject_data``; erasures call every plugin's ``erase_subject_data`` (each plugin keeps
what the law obliges, anonymised, and says so in its report).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from botcriptofy import DataSubject, Kernel, Notification, PluginError

from ._exports import build_zip, export_dir, write_file
from ._models import requests
from ._state import settings_of, state_of

log = logging.getLogger("botcriptofy.lgpd")

SELF = "lgpd"
CLAIM_LEASE = timedelta(minutes=5)
MAX_ATTEMPTS = 5
OPEN = ("received", "processing", "failed")


def utcnow() -> datetime:
    return datetime.now(UTC)


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _iso(value: datetime | None) -> str | None:
    aware = _aware(value)
    return aware.isoformat() if aware is not None else None


async def _audit(
    kernel: Kernel, row: dict[str, Any], action: str, *, actor_id: str | None = None, outcome: str = "success", **details: Any
) -> None:
    await kernel.audit(
        action,
        actor_id=actor_id or row.get("requested_by") or row["user_id"],
        actor_kind="user" if (actor_id or row.get("requested_by")) else "system",
        tenant_id=row.get("tenant_id"),
        target=f"privacy_request:{row['id']}",
        subject=row["user_id"],
        outcome=outcome,
        details={"request_id": row["id"], "kind": row["kind"], **details},
    )


async def get(kernel: Kernel, request_id: str) -> dict[str, Any] | None:
    async with kernel.database().session(system=True) as session:
        row = (await session.execute(sa.select(requests).where(requests.c.id == request_id))).mappings().first()
    return dict(row) if row is not None else None


async def create(
    kernel: Kernel,
    *,
    user_id: str,
    tenant_id: str | None,
    kind: str,
    requested_by: str | None,
    detail: dict[str, Any] | None = None,
    status: str = "received",
) -> dict[str, Any]:
    settings = settings_of(kernel)
    moment = utcnow()
    deadline = moment + timedelta(days=settings.deadline_days)
    row: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "tenant_id": tenant_id,
        "user_id": user_id,
        "kind": kind,
        "status": status,
        "received_at": moment,
        "deadline_at": deadline,
        "completed_at": moment if status == "completed" else None,
        "requested_by": requested_by,
        "detail": detail or {},
        "report": None,
        "steps": [{"at": moment.isoformat(), "step": "received"}]
        + ([{"at": moment.isoformat(), "step": "completed"}] if status == "completed" else []),
        "attempts": 0,
        "reminded": False,
        "overdue_flagged": False,
        "updated_at": moment,
    }
    async with kernel.database().session(system=True) as session:
        await session.execute(sa.insert(requests).values(**row))
    await _audit(kernel, row, "privacy.request_received", deadline_at=deadline.isoformat())
    if status == "completed":
        await _audit(kernel, row, "privacy.request_completed")
    return row


async def _step(kernel: Kernel, request_id: str, step: str, **values: Any) -> dict[str, Any]:
    moment = utcnow()
    async with kernel.database().session(system=True, write_lock=True) as session:
        steps = await session.scalar(sa.select(requests.c.steps).where(requests.c.id == request_id))
        entry = {"at": moment.isoformat(), "step": step}
        if "error" in values:
            entry["error"] = values.pop("error")
        await session.execute(
            sa.update(requests).where(requests.c.id == request_id).values(steps=[*(steps or []), entry], updated_at=moment, **values)
        )
    row = await get(kernel, request_id)
    assert row is not None
    return row


async def claim(kernel: Kernel, request_id: str) -> bool:
    """Take a request for processing; False when another worker holds it or it is finished."""
    moment = utcnow()
    stale = moment - CLAIM_LEASE
    async with kernel.database().session(system=True, write_lock=True) as session:
        result = await session.execute(
            sa.update(requests)
            .where(
                requests.c.id == request_id,
                requests.c.kind.in_(("export", "erasure")),
                requests.c.attempts < MAX_ATTEMPTS,
                sa.or_(
                    requests.c.status.in_(("received", "failed")), sa.and_(requests.c.status == "processing", requests.c.updated_at < stale)
                ),
            )
            .values(status="processing", updated_at=moment, attempts=requests.c.attempts + 1)
        )
    return bool(result.rowcount)


def _subject(row: dict[str, Any]) -> DataSubject:
    detail = row.get("detail") or {}
    return DataSubject(user_id=row["user_id"], tenant_id=detail.get("owned_tenant_id"), email=detail.get("email"))


async def _call_each(kernel: Kernel, hook: str, subject: DataSubject) -> dict[str, Any]:
    """Call every plugin's privacy hook, this plugin's last; a failure names its plugin."""
    names = [impl.plugin_name for impl in reversed(getattr(kernel.hook, hook).get_hookimpls())]
    names.sort(key=lambda name: name == SELF)
    results: dict[str, Any] = {}
    for name in names:
        found = await kernel.call_plugin(name, hook, kernel=kernel, subject=subject)
        if found is not None:
            results[name] = found
    return results


async def process(kernel: Kernel, request_id: str, *, email: str | None = None) -> dict[str, Any] | None:
    """Run a claimed export or erasure to its end; return the request (None when it could not be claimed)."""
    if not await claim(kernel, request_id):
        return None
    row = await _step(kernel, request_id, "processing")
    await _audit(kernel, row, "privacy.request_processing", attempt=row["attempts"])
    subject = _subject(row)
    if email is not None:
        subject = DataSubject(user_id=subject.user_id, tenant_id=subject.tenant_id, email=email)
    try:
        if row["kind"] == "export":
            return await _export(kernel, row, subject)
        return await _erase(kernel, row, subject)
    except PluginError as error:
        log.error("privacy request %s failed at plugin '%s': %s", request_id, error.plugin, error)
        row = await _step(kernel, request_id, "failed", status="failed", error=f"plugin '{error.plugin}' failed; it is retried")
        await _audit(kernel, row, "privacy.request_failed", outcome="failure", plugin=error.plugin)
        return row


async def _export(kernel: Kernel, row: dict[str, Any], subject: DataSubject) -> dict[str, Any]:
    settings, state = settings_of(kernel), state_of(kernel)
    gathered = await _call_each(kernel, "export_subject_data", subject)
    archive = build_zip(row["id"], {"user_id": subject.user_id, "tenant_id": row["tenant_id"]}, gathered)
    name = f"{row['id']}.zip.enc"
    write_file(export_dir(settings, kernel.state_dir), name, state.keys.encrypt(archive, context=row["id"]))
    moment = utcnow()
    report = {"plugins": sorted(gathered), "bytes": len(archive)}
    done = await _step(
        kernel,
        row["id"],
        "completed",
        status="completed",
        completed_at=moment,
        report=report,
        file_name=name,
        download_expires_at=moment + timedelta(seconds=settings.export_link_ttl),
    )
    await _audit(kernel, done, "privacy.request_completed", plugins=report["plugins"], bytes=report["bytes"])
    return done


async def _erase(kernel: Kernel, row: dict[str, Any], subject: DataSubject) -> dict[str, Any]:
    reports = await _call_each(kernel, "erase_subject_data", subject)
    kept = {plugin: report.get("kept") for plugin, report in reports.items() if isinstance(report, dict) and report.get("kept")}
    erased = {plugin: report.get("erased") for plugin, report in reports.items() if isinstance(report, dict) and report.get("erased")}
    report = {"plugins": reports, "erased": erased, "kept": kept}
    done = await _step(
        kernel,
        row["id"],
        "completed",
        status="completed",
        completed_at=utcnow(),
        report=report,
        detail={k: v for k, v in (row.get("detail") or {}).items() if k != "email"},
    )
    await _audit(kernel, done, "privacy.request_completed", plugins=sorted(reports), kept=sorted(kept))
    return done


async def complete(kernel: Kernel, request_id: str, *, by: str, note: str) -> dict[str, Any]:
    row = await _step(kernel, request_id, "completed", status="completed", completed_at=utcnow(), report={"note": note, "by": by})
    await _audit(kernel, row, "privacy.request_completed", actor_id=by, note=note)
    return row


# -- download links ---------------------------------------------------------------------------


def download_token(kernel: Kernel, row: dict[str, Any]) -> str:
    expires = _iso(row["download_expires_at"]) or ""
    key = state_of(kernel).link_key
    return hmac.new(key, f"{row['id']}|{expires}".encode(), hashlib.sha256).hexdigest()


def token_matches(kernel: Kernel, row: dict[str, Any], token: str) -> bool:
    # Compare bytes: compare_digest refuses str with non-ASCII characters, and a client may send any.
    return hmac.compare_digest(download_token(kernel, row).encode(), token.encode("utf-8", "surrogatepass"))


# -- deadlines ----------------------------------------------------------------------------------


def overdue(row: dict[str, Any], now: datetime | None = None) -> bool:
    deadline = _aware(row["deadline_at"])
    assert deadline is not None
    return row["status"] != "completed" and (now or utcnow()) > deadline


def present(kernel: Kernel, row: dict[str, Any], *, owner: bool) -> dict[str, Any]:
    now = utcnow()
    deadline = _aware(row["deadline_at"])
    assert deadline is not None
    shown: dict[str, Any] = {
        "id": row["id"],
        "kind": row["kind"],
        "status": row["status"],
        "user_id": row["user_id"],
        "tenant_id": row["tenant_id"],
        "received_at": _iso(row["received_at"]),
        "deadline_at": _iso(deadline),
        "completed_at": _iso(row["completed_at"]),
        "overdue": overdue(row, now),
        "days_left": max((deadline - now).days, 0) if row["status"] != "completed" else None,
        "steps": row["steps"],
        "report": row["report"],
    }
    expires = _aware(row.get("download_expires_at"))
    if owner and row["kind"] == "export" and row["status"] == "completed" and expires is not None and row.get("file_name"):
        shown["download"] = {
            "url": f"/v1/privacy/exports/{row['id']}/download?token={download_token(kernel, row)}",
            "expires_at": expires.isoformat(),
            "expired": now >= expires,
        }
    return shown


async def sweep(kernel: Kernel, *, now: datetime | None = None) -> dict[str, int]:
    """Resume unfinished exports and erasures, remind the DPO of near deadlines, flag overdue requests, delete old files."""
    settings = settings_of(kernel)
    moment = now or utcnow()
    counts = {"resumed": 0, "reminded": 0, "overdue": 0, "files_deleted": 0}
    async with kernel.database().session(system=True) as session:
        open_rows = [dict(r) for r in (await session.execute(sa.select(requests).where(requests.c.status.in_(OPEN)))).mappings().all()]
        finished = [
            dict(r)
            for r in (await session.execute(sa.select(requests).where(requests.c.file_name.is_not(None), requests.c.status == "completed")))
            .mappings()
            .all()
        ]
    for row in open_rows:
        if row["kind"] in ("export", "erasure") and row["attempts"] < MAX_ATTEMPTS and await process(kernel, row["id"]) is not None:
            counts["resumed"] += 1
            row = await get(kernel, row["id"]) or row
        deadline = _aware(row["deadline_at"])
        assert deadline is not None
        if row["status"] == "completed":
            continue
        if overdue(row, moment) and not row["overdue_flagged"]:
            row = await _step(kernel, row["id"], "overdue", overdue_flagged=True)
            await _audit(kernel, row, "privacy.request_overdue", outcome="failure", deadline_at=deadline.isoformat())
            await kernel.notify(
                Notification(
                    recipient="department:audit",
                    subject="Privacy request overdue",
                    body=f"Privacy request {row['id']} ({row['kind']}) passed its deadline {deadline.date()}.",
                    severity="critical",
                    data={"request_id": row["id"]},
                )
            )
            counts["overdue"] += 1
        elif not row["reminded"] and not overdue(row, moment) and moment >= deadline - timedelta(days=settings.reminder_days):
            row = await _step(kernel, row["id"], "reminded", reminded=True)
            days_left = max((deadline - moment).days, 0)
            await _audit(kernel, row, "privacy.request_deadline_near", deadline_at=deadline.isoformat(), days_left=days_left)
            await kernel.notify(
                Notification(
                    recipient="department:audit",
                    subject="Privacy request deadline near",
                    body=f"Privacy request {row['id']} ({row['kind']}) is due {deadline.date()}.",
                    severity="warning",
                    data={"request_id": row["id"]},
                )
            )
            counts["reminded"] += 1
    directory = export_dir(settings, kernel.state_dir)
    for row in finished:
        completed = _aware(row["completed_at"]) or moment
        if moment - completed >= timedelta(seconds=settings.export_retention):
            (directory / row["file_name"]).unlink(missing_ok=True)
            await _step(kernel, row["id"], "file_deleted", file_name=None)
            counts["files_deleted"] += 1
    return counts
