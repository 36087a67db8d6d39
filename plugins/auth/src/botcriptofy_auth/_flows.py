"""Account flows that prove a mailbox: e-mail verification, password reset and e-mail change.

Each flow sends a single-use link through ``kernel.notify`` (the ``email`` channel only, written to
the outbox in the transaction that creates the token). A token is 256 random bits; only its keyed
hash (HMAC-SHA-256 under the API key pepper) is stored, so a tampered token matches nothing and a
stolen database cannot produce a working link. A link is addressed ``account-mail:<token id>``:
this plugin resolves it to the person at the address the link was sent to (which, for an e-mail
change, is not yet the account's address), without an in-app inbox entry, since reading the inbox
must not prove ownership of the mailbox. A token used, superseded or expired before the
notification is routed reaches nobody.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from botcriptofy import Actor, Kernel, Notification, ProblemError

from . import _db
from ._events import EmailChanged, EmailVerified, PasswordReset
from ._models import AccountToken, User, new_id
from ._passwords import check_policy, normalise_password
from ._principals import invalidate_user
from ._state import CACHE_NAMESPACE, settings_of, state_of
from ._util import now

log = logging.getLogger("botcriptofy.auth")

ADDRESS_KIND = "account-mail"
VERIFY, RESET, CHANGE_NEW, CHANGE_OLD = "verify_email", "reset_password", "change_email_new", "change_email_old"
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{43}$")
_TOKEN_PURPOSE = "account-token"
PROBLEMS = "https://botcriptofy.dev/problems/"

# What each link is for: the notification template, the front-end page and the API call that uses it.
_LINKS = {
    VERIFY: ("auth.verify_email", "verify-email", "POST /v1/auth/email/verify"),
    RESET: ("auth.password_reset", "reset-password", "POST /v1/auth/password/reset"),
    CHANGE_NEW: ("auth.email_change_confirm", "confirm-email-change", "POST /v1/auth/email/change/confirm"),
    CHANGE_OLD: ("auth.email_change_notice", "review-email-change", "POST /v1/auth/email/change/confirm (or /cancel)"),
}
# The e-mail's text when the notifications plugin has no template of that name (it has pt-BR and en ones).
_FALLBACK = {
    VERIFY: ("Confirm your e-mail address", "Confirm that this address is yours: {link}. The link expires at {expires_at}."),
    RESET: (
        "Reset your password",
        "Someone asked to reset the password of the account that uses this address. To choose a new one: {link}. "
        "The link expires at {expires_at}. If it was not you, ignore this message.",
    ),
    CHANGE_NEW: (
        "Confirm your new e-mail address",
        "Confirm that this address is yours to move your account to it: {link}. It expires at {expires_at}.",
    ),
    CHANGE_OLD: (
        "Your account's e-mail address is being changed",
        "A change of your account's address to {new_email} was requested. Confirm it: {link}. If it was not you, cancel it "
        "with the same token at POST /v1/auth/email/change/cancel; your sessions will then be ended.",
    ),
}


def mask_email(email: str) -> str:
    """``ana.souza@example.com`` → ``a***@example.com``: enough for the owner to recognise, little for anyone else."""
    local, _, domain = email.rpartition("@")
    return f"{local[:1]}***@{domain}"


def _hash_candidates(kernel: Kernel, token: str) -> list[str]:
    return state_of(kernel).peppers.candidates(_TOKEN_PURPOSE, token)


def _problem(status: int, slug: str, title: str, detail: str, field: str = "token") -> ProblemError:
    return ProblemError(
        status, title, detail, type=PROBLEMS + slug, errors=[{"field": field, "message": detail, "type": slug, "in": "body"}]
    )


def invalid_token() -> ProblemError:
    return _problem(400, "token-invalid", "Invalid link", "This link is not valid: copy it whole from the e-mail, or ask for a new one.")


def _check(row: AccountToken | None, purposes: tuple[str, ...], moment: datetime) -> AccountToken:
    """Refuse a token that does not exist, is of another kind, was used or superseded, or expired."""
    if row is None or row.purpose not in purposes:
        raise invalid_token()
    if row.used_at is not None:
        raise _problem(400, "token-used", "Link already used", "This link was used already; each link works once.")
    if row.revoked_at is not None:
        raise _problem(400, "token-superseded", "Link replaced", "A newer link replaced this one (or the request was cancelled).")
    if row.expires_at <= moment:
        raise _problem(400, "token-expired", "Link expired", "This link has expired; ask for a new one.")
    return row


async def _find(session: Any, kernel: Kernel, token: str) -> AccountToken | None:
    if not isinstance(token, str) or not _TOKEN.match(token):
        return None
    row: AccountToken | None = (
        await session.scalars(sa.select(AccountToken).where(AccountToken.token_hash.in_(_hash_candidates(kernel, token))))
    ).first()
    return row


async def _claim(session: Any, row: AccountToken, moment: datetime) -> None:
    """Mark ``row`` used; a concurrent use of the same token loses (single use under races)."""
    result = await session.execute(
        sa.update(AccountToken)
        .where(AccountToken.id == row.id, AccountToken.used_at.is_(None), AccountToken.revoked_at.is_(None))
        .values(used_at=moment)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount == 0:
        raise _problem(400, "token-used", "Link already used", "This link was used already; each link works once.")


async def _revoke_open(session: Any, user_id: str, purposes: tuple[str, ...], moment: datetime, *, keep: str | None = None) -> None:
    query = sa.update(AccountToken).where(
        AccountToken.user_id == user_id,
        AccountToken.purpose.in_(purposes),
        AccountToken.used_at.is_(None),
        AccountToken.revoked_at.is_(None),
    )
    if keep is not None:
        query = query.where(AccountToken.id != keep)
    await session.execute(query.values(revoked_at=moment).execution_options(synchronize_session=False))


# -- sending --------------------------------------------------------------------------------------


def _link(kernel: Kernel, purpose: str, token: str) -> str:
    base = settings_of(kernel).account_link_url.rstrip("/")
    return f"{base}/{_LINKS[purpose][1]}?token={token}" if base else ""


async def issue(
    kernel: Kernel,
    session: Any,
    *,
    user: User,
    purpose: str,
    email: str,
    ttl: int,
    new_email: str | None = None,
    change_id: str | None = None,
) -> AccountToken:
    """Create a token in ``session`` and queue its e-mail in the same transaction (sent only if it commits)."""
    secret = secrets.token_urlsafe(32)
    moment = now()
    row = AccountToken(
        id=new_id(),
        tenant_id=user.tenant_id,
        user_id=user.id,
        purpose=purpose,
        token_hash=state_of(kernel).peppers.hash(_TOKEN_PURPOSE, secret),
        email=email,
        new_email=new_email,
        change_id=change_id,
        created_at=moment,
        expires_at=moment + timedelta(seconds=ttl),
    )
    session.add(row)
    await session.flush()
    template, _, api = _LINKS[purpose]
    link = _link(kernel, purpose, secret)
    expires_at = row.expires_at.strftime("%Y-%m-%d %H:%M UTC")
    # No name and only a masked new address: the request waits in the outbox, which erasure scrubs of the address only.
    shown = mask_email(new_email) if new_email else ""
    params = {"link": link, "token": secret, "api": api, "expires_at": expires_at, "new_email": shown}
    subject, body = _FALLBACK[purpose]
    await kernel.notify(
        Notification(
            recipient=f"{ADDRESS_KIND}:{row.id}",
            channel="email",
            category=template,
            severity="critical",  # never held back by quiet hours, never unsubscribable
            template=template,
            params=params,
            subject=subject,
            body=body.format(link=link or f"{secret} ({api})", expires_at=expires_at, new_email=shown),
        ),
        session=session if kernel.outbox() is not None else None,
    )
    return row


async def mail_wait(kernel: Kernel, kind: str, email: str) -> float | None:
    """Record one account e-mail of ``kind`` to ``email``; the seconds to wait instead when the interval or daily cap forbids it."""
    settings = settings_of(kernel)
    cache = kernel.cache()
    digest = hashlib.sha256(f"{kind}\x00{email}".encode()).hexdigest()
    moment = time.time()
    last = await cache.get(f"mail-last:{digest}", namespace=CACHE_NAMESPACE)
    if isinstance(last, (int, float)) and moment - last < settings.account_mail_interval:
        return settings.account_mail_interval - (moment - last)
    count = await cache.get(f"mail-count:{digest}", namespace=CACHE_NAMESPACE)
    if not isinstance(count, dict) or count.get("start", 0) < moment - 86_400:
        count = {"start": moment, "count": 0}
    if count["count"] >= settings.account_mail_daily_cap:
        return float(count["start"] + 86_400 - moment)
    await cache.set(f"mail-count:{digest}", {**count, "count": count["count"] + 1}, ttl=86_400, namespace=CACHE_NAMESPACE)
    if settings.account_mail_interval > 0:
        await cache.set(f"mail-last:{digest}", moment, ttl=settings.account_mail_interval, namespace=CACHE_NAMESPACE)
    return None


def _too_soon(wait: float) -> ProblemError:
    seconds = max(1, round(wait))
    return ProblemError(
        429,
        "Too Many Requests",
        f"An e-mail of this kind went to this address moments ago; retry in {seconds} s.",
        type=PROBLEMS + "too-many-emails",
        headers={"Retry-After": str(seconds)},
        retry_after=seconds,
    )


# -- e-mail verification --------------------------------------------------------------------------


async def send_verification(kernel: Kernel, session: Any, user: User) -> AccountToken:
    """Replace any open verification link of ``user`` with a new one to the account's address (in ``session``)."""
    assert user.email is not None
    await _revoke_open(session, user.id, (VERIFY,), now())
    return await issue(kernel, session, user=user, purpose=VERIFY, email=user.email, ttl=settings_of(kernel).email_verification_ttl)


async def resend_verification(kernel: Kernel, principal: dict[str, Any]) -> datetime:
    """Send a new verification link to the caller's address; 409 when verified already, 429 when one went out moments ago."""
    if principal["kind"] != "user" or not principal["email"]:
        raise ProblemError(409, "No address to verify", "This account has no e-mail address.")
    if principal["email_verified"]:
        raise ProblemError(409, "Already verified", "This account's e-mail address is verified already.", type=PROBLEMS + "email-verified")
    wait = await mail_wait(kernel, VERIFY, principal["email"])
    if wait is not None:
        raise _too_soon(wait)
    async with _db.tenant(kernel, principal["tenant_id"], write=True) as session:
        user = await session.get(User, principal["user_id"])
        if user is None or user.email is None:
            raise ProblemError(404, "Not Found", "No such user.")
        row = await send_verification(kernel, session, user)
        return row.expires_at


async def verify_email(kernel: Kernel, token: str) -> str:
    """Mark the address the link went to as verified (when it is still the account's); return the user id."""
    moment = now()
    async with _db.system(kernel, write=True) as session:
        row = _check(await _find(session, kernel, token), (VERIFY,), moment)
        user = await session.get(User, row.user_id)
        if user is None or user.email != row.email:
            raise _problem(400, "token-superseded", "Link replaced", "This link was for an address the account no longer uses.")
        await _claim(session, row, moment)
        user.email_verified = True
        await _db.publish(kernel, EmailVerified(user_id=user.id, tenant_id=user.tenant_id), session, tenant_id=user.tenant_id)
        user_id = user.id
    await invalidate_user(kernel, user_id)
    return user_id


# -- password reset --------------------------------------------------------------------------------


@dataclass
class _ResetRequest:
    email: str
    ip: str | None


RESET_BACKLOG = 256  # reset requests waiting or being handled, per worker; past it they are dropped (still 202)
RESET_CONCURRENCY = 4  # handled at once, so a burst queues instead of taking every database connection
RESET_DELAY = (0.05, 0.3)  # seconds before the work starts, drawn at random


def request_password_reset(kernel: Kernel, email: str, ip: str | None) -> None:
    """Send a reset link if an active account uses ``email``: in the background, so known and unknown addresses answer alike and as fast."""
    state = state_of(kernel)
    if sum(1 for task in state.background if task.get_name() == "auth.password-reset") >= RESET_BACKLOG:
        log.warning("password reset requests: %d already being handled; this one is dropped (a flood?)", RESET_BACKLOG)
        return
    task = asyncio.get_running_loop().create_task(_send_reset(kernel, _ResetRequest(email=email, ip=ip)), name="auth.password-reset")
    state.background.add(task)
    task.add_done_callback(state.background.discard)


async def _send_reset(kernel: Kernel, request: _ResetRequest) -> None:
    # Start a little later, at a random moment: the work (more of it for a known address) then runs
    # after this request's answer is sent, and not at a moment its sender can tell.
    await asyncio.sleep(RESET_DELAY[0] + secrets.randbelow(int((RESET_DELAY[1] - RESET_DELAY[0]) * 1000)) / 1000)
    state = state_of(kernel)
    if state.reset_slots is None:
        state.reset_slots = asyncio.Semaphore(RESET_CONCURRENCY)
    async with state.reset_slots:
        await _handle_reset(kernel, request)


async def _handle_reset(kernel: Kernel, request: _ResetRequest) -> None:
    try:
        if await mail_wait(kernel, RESET, request.email) is not None:
            return
        async with _db.system(kernel, write=True) as session:
            user = (await session.scalars(sa.select(User).where(User.email == request.email, User.kind == "user"))).first()
            if user is None or user.status != "active":
                return
            await _revoke_open(session, user.id, (RESET,), now())
            await issue(kernel, session, user=user, purpose=RESET, email=request.email, ttl=settings_of(kernel).password_reset_ttl)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("password reset e-mail for a requested address failed")


async def reset_password(kernel: Kernel, token: str, new_password: str) -> int:
    """Set a new password with a reset link; every session of the account ends. Return how many sessions were revoked."""
    from ._service import revoke_sessions

    settings, state = settings_of(kernel), state_of(kernel)
    new_password = normalise_password(new_password)
    async with _db.system(kernel) as session:
        row = _check(await _find(session, kernel, token), (RESET,), now())
        user = await session.get(User, row.user_id)
        if user is None or user.status != "active":
            raise invalid_token()
        if user.email != row.email:
            raise _problem(400, "token-superseded", "Link replaced", "This link was for an address the account no longer uses.")
        email, name = user.email, user.name
    # The policy first: a refused password does not burn the link.
    check_policy(
        new_password, min_length=settings.pw_min_length, max_length=settings.pw_max_length, email=email, name=name, field="new_password"
    )
    hashed = await state.passwords.hash(new_password)
    moment = now()
    async with _db.system(kernel, write=True) as session:
        row = _check(await session.get(AccountToken, row.id), (RESET,), moment)
        await _claim(session, row, moment)
        await _revoke_open(session, row.user_id, (RESET,), moment)
        # The link proves the mailbox: the address is verified, and the brute-force guard is lifted.
        await session.execute(
            sa.update(User)
            .where(User.id == row.user_id)
            .values(password_hash=hashed, email_verified=True, locked_until=None, failed_logins=0, failed_window_start=None)
            .execution_options(synchronize_session=False)
        )
        await _db.publish(kernel, PasswordReset(user_id=row.user_id, tenant_id=row.tenant_id), session, tenant_id=row.tenant_id)
        user_id, tenant_id = row.user_id, row.tenant_id
    revoked = await revoke_sessions(kernel, tenant_id=tenant_id, user_id=user_id, session_ids=None, reason="password_reset")
    await invalidate_user(kernel, user_id)
    await kernel.audit(
        "auth.password_reset",
        actor_id=user_id,
        actor_kind="user",
        tenant_id=tenant_id,
        target=f"user:{user_id}",
        subject=user_id,
        details={"sessions_revoked": len(revoked)},
    )
    return len(revoked)


# -- e-mail change ---------------------------------------------------------------------------------


async def start_email_change(
    kernel: Kernel, actor: Actor, principal: dict[str, Any], new_email: str, credentials: dict[str, Any]
) -> dict[str, Any]:
    """Ask the new address to prove itself and, when the current one is verified, that address to confirm (or cancel)."""
    from ._reauth import reauthenticate

    if principal["kind"] != "user" or actor.attributes.get("auth") != "session":
        raise ProblemError(403, "Log in to change the address", "Changing the e-mail address needs a login session, not an API key.")
    if not await reauthenticate(kernel, actor, credentials):
        raise ProblemError(
            403,
            "Re-authentication failed",
            "The password (and the TOTP code, when two-factor is on) is needed to change the e-mail address.",
            type=PROBLEMS + "reauthentication-failed",
            errors=[{"field": "password", "message": "is wrong", "type": "value_error", "in": "body"}],
        )
    if new_email == principal["email"]:
        raise ProblemError(
            422,
            "Validation failed",
            "This is the account's address already.",
            errors=[{"field": "new_email", "message": "is the current address", "type": "value_error", "in": "body"}],
        )
    async with _db.system(kernel) as session:
        taken = await session.scalar(sa.select(User.id).where(User.email == new_email))
    if taken is not None:
        raise _taken()
    wait = await mail_wait(kernel, "change", new_email)
    if wait is not None:
        raise _too_soon(wait)
    ttl = settings_of(kernel).email_change_ttl
    change_id = new_id()
    async with _db.tenant(kernel, principal["tenant_id"], write=True) as session:
        user = await session.get(User, principal["user_id"])
        if user is None or user.email is None:
            raise ProblemError(404, "Not Found", "No such user.")
        await _revoke_open(session, user.id, (CHANGE_NEW, CHANGE_OLD), now())
        row = await issue(
            kernel, session, user=user, purpose=CHANGE_NEW, email=new_email, ttl=ttl, new_email=new_email, change_id=change_id
        )
        confirmations = ["new_address"]
        if user.email_verified:
            await issue(kernel, session, user=user, purpose=CHANGE_OLD, email=user.email, ttl=ttl, new_email=new_email, change_id=change_id)
            confirmations.append("current_address")
        expires_at = row.expires_at
    return {"change_id": change_id, "new_email": new_email, "confirmations": confirmations, "expires_at": expires_at}


def _taken() -> ProblemError:
    return ProblemError(
        409,
        "E-mail already registered",
        "Another account uses this address.",
        errors=[{"field": "new_email", "message": "is already registered", "type": "unique", "in": "body"}],
    )


async def confirm_email_change(kernel: Kernel, token: str) -> dict[str, Any]:
    """Record one address's confirmation; the second one (or the only one, for an unverified account) moves the account."""
    moment = now()
    try:
        async with _db.system(kernel, write=True) as session:
            found = await _find(session, kernel, token)
            # Both confirmations of one change serialise on the account's row.
            user = (await session.scalars(sa.select(User).where(User.id == found.user_id).with_for_update())).first() if found else None
            row = _check(found, (CHANGE_NEW, CHANGE_OLD), moment)
            if user is None or user.status != "active":
                raise invalid_token()
            await _claim(session, row, moment)
            siblings = list((await session.scalars(sa.select(AccountToken).where(AccountToken.change_id == row.change_id))).all())
            waiting = sorted(
                "new_address" if s.purpose == CHANGE_NEW else "current_address" for s in siblings if s.id != row.id and s.used_at is None
            )
            if waiting:
                return {"status": "pending", "waiting_for": waiting}
            assert row.new_email is not None
            user.email, user.email_verified = row.new_email, True
            await session.flush()
            # Links sent to the old address (a reset, a verification) die with it.
            await _revoke_open(session, user.id, (VERIFY, RESET, CHANGE_NEW, CHANGE_OLD), moment)
            await _db.publish(kernel, EmailChanged(user_id=user.id, tenant_id=user.tenant_id), session, tenant_id=user.tenant_id)
            user_id, tenant_id = user.id, user.tenant_id
    except IntegrityError:
        raise _taken() from None
    await invalidate_user(kernel, user_id)
    await kernel.audit(
        "auth.email_changed", actor_id=user_id, actor_kind="user", tenant_id=tenant_id, target=f"user:{user_id}", subject=user_id
    )
    return {"status": "changed", "waiting_for": []}


async def cancel_email_change(kernel: Kernel, token: str) -> int:
    """The current address refuses the change: both links die and every session of the account ends (someone else asked)."""
    from ._service import revoke_sessions

    moment = now()
    async with _db.system(kernel, write=True) as session:
        row = _check(await _find(session, kernel, token), (CHANGE_OLD,), moment)
        await _claim(session, row, moment)
        await session.execute(
            sa.update(AccountToken)
            .where(AccountToken.change_id == row.change_id, AccountToken.used_at.is_(None))
            .values(revoked_at=moment)
            .execution_options(synchronize_session=False)
        )
        user_id, tenant_id = row.user_id, row.tenant_id
    revoked = await revoke_sessions(kernel, tenant_id=tenant_id, user_id=user_id, session_ids=None, reason="email_change_cancelled")
    await kernel.audit(
        "auth.email_change_cancelled",
        actor_id=user_id,
        actor_kind="user",
        tenant_id=tenant_id,
        target=f"user:{user_id}",
        subject=user_id,
        details={"sessions_revoked": len(revoked)},
    )
    return len(revoked)


# -- addressing -----------------------------------------------------------------------------------


async def recipient_of(kernel: Kernel, token_id: str) -> list[Any]:
    """The person at the address a link went to; nobody once the link is used, superseded or expired."""
    from botcriptofy import Recipient

    async with _db.system(kernel) as session:
        row = await session.get(AccountToken, token_id)
        if row is None or row.used_at is not None or row.revoked_at is not None or row.expires_at <= now():
            return []
        user = await session.get(User, row.user_id)
        if user is None or user.status != "active":
            return []
        # No tenant: the link must not land in the in-app inbox, whose reader has not proved the mailbox.
        return [Recipient(user_id=user.id, tenant_id=None, name=user.name, email=row.email, email_verified=False)]
