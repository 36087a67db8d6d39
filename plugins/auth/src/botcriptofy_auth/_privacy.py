"""LGPD hooks: what the auth plugin holds about a person, and how it forgets them."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from botcriptofy import DataSubject, Kernel

from . import _db
from ._accounts import field_context
from ._models import AccountToken, ApiKey, Identity, LoginIp, Session, StaffRole, Tenant, User
from ._principals import invalidate_user, mark_key_revoked, mark_sessions_revoked
from ._state import state_of
from ._util import now


def _iso(value: Any) -> Any:
    return value.isoformat() if value is not None else None


async def _user(session: Any, subject: DataSubject) -> User | None:
    found: User | None = await session.get(User, subject.user_id)
    return found


async def export(kernel: Kernel, subject: DataSubject) -> dict[str, Any] | None:
    cipher = state_of(kernel).cipher
    async with _db.system(kernel) as session:
        user = await _user(session, subject)
        if user is None:
            return None
        sessions = (await session.scalars(sa.select(Session).where(Session.user_id == user.id))).all()
        keys = (await session.scalars(sa.select(ApiKey).where(ApiKey.user_id == user.id))).all()
        ips = (await session.scalars(sa.select(LoginIp).where(LoginIp.user_id == user.id))).all()
        links = (await session.scalars(sa.select(Identity).where(Identity.user_id == user.id))).all()
        roles = (await session.scalars(sa.select(StaffRole).where(StaffRole.user_id == user.id))).all()
        links_sent = (await session.scalars(sa.select(AccountToken).where(AccountToken.user_id == user.id))).all()

    def plain(column: str) -> str | None:
        stored = getattr(user, column)
        return cipher.decrypt(stored, context=field_context(column, user.id)) if stored else None

    return {
        "user": {
            "id": user.id,
            "tenant_id": user.tenant_id,
            "email": user.email,
            "name": user.name,
            "created_at": _iso(user.created_at),
            "phone": plain("phone"),
            "tax_id": plain("tax_id"),
            "totp_enabled": user.totp_enabled,
            "status": user.status,
        },
        "roles": {r.department: r.role for r in roles},
        "sessions": [
            {
                "id": s.id,
                "method": s.method,
                "ip": s.ip,
                "user_agent": s.user_agent,
                "created_at": _iso(s.created_at),
                "last_used_at": _iso(s.last_used_at),
                "revoked_at": _iso(s.revoked_at),
            }
            for s in sessions
        ],
        "api_keys": [
            {
                "id": k.id,
                "name": k.name,
                "prefix": k.prefix,
                "scopes": k.scopes,
                "created_at": _iso(k.created_at),
                "last_used_at": _iso(k.last_used_at),
                "revoked_at": _iso(k.revoked_at),
            }
            for k in keys
        ],
        "login_ips": [{"ip": i.ip, "first_seen": _iso(i.first_seen), "last_seen": _iso(i.last_seen)} for i in ips],
        "linked_identities": [{"provider": link.provider, "email": link.email, "created_at": _iso(link.created_at)} for link in links],
        "account_emails": [
            {
                "purpose": t.purpose,
                "sent_to": t.email,
                "new_email": t.new_email,
                "created_at": _iso(t.created_at),
                "used_at": _iso(t.used_at),
            }
            for t in links_sent
        ],
    }


async def erase(kernel: Kernel, subject: DataSubject) -> dict[str, Any] | None:
    moment = now()
    async with _db.system(kernel, write=True) as session:
        user = await _user(session, subject)
        if user is None:
            return None
        session_ids = list(
            (await session.scalars(sa.select(Session.id).where(Session.user_id == user.id, Session.revoked_at.is_(None)))).all()
        )
        key_ids = list((await session.scalars(sa.select(ApiKey.id).where(ApiKey.user_id == user.id, ApiKey.revoked_at.is_(None)))).all())
        await session.execute(
            sa.update(Session)
            .where(Session.user_id == user.id)
            .values(ip=None, user_agent=None, revoked_at=sa.func.coalesce(Session.revoked_at, moment), revoke_reason="erased")
        )
        await session.execute(sa.update(ApiKey).where(ApiKey.user_id == user.id, ApiKey.revoked_at.is_(None)).values(revoked_at=moment))
        await session.execute(sa.delete(LoginIp).where(LoginIp.user_id == user.id))
        await session.execute(sa.delete(Identity).where(Identity.user_id == user.id))
        await session.execute(sa.delete(AccountToken).where(AccountToken.user_id == user.id))
        tenant = await session.get(Tenant, user.tenant_id)
        if tenant is not None and tenant.type != "company":
            tenant.name = "erased user"  # a trader's or influencer's tenant is named after them
        user.email = None
        user.name = "erased user"
        user.phone = None
        user.tax_id = None
        user.password_hash = None
        user.totp_secret = None
        user.totp_enabled = False
        user.status = "disabled"
    await mark_sessions_revoked(kernel, session_ids)
    for key_id in key_ids:
        await mark_key_revoked(kernel, key_id)
    await invalidate_user(kernel, subject.user_id)
    return {
        "erased": [
            "email",
            "name (also the name of their own tenant)",
            "phone",
            "tax_id",
            "password",
            "totp secret",
            "login IPs",
            "linked identities",
            "account e-mail links (addresses they went to)",
            "session addresses and user agents",
        ],
        "kept": {
            "user id and tenant": "referenced by invoices and the audit trail, which the law obliges the platform to keep",
            "session and API key records (revoked)": "security audit trail, without personal data",
        },
    }
