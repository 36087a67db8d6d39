"""Accounts, logins and sessions: the auth plugin's operations, independent of HTTP."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from botcriptofy import Kernel, ProblemError, RateLimit

from . import _db, _throttle, _totp
from ._events import (
    AccountLocked,
    LoginFailed,
    LoginSucceeded,
    LoginThrottled,
    NewIpLogin,
    RefreshTokenReused,
    SessionsRevoked,
    UserSignedUp,
)
from ._flows import VERIFY, mail_wait, send_verification
from ._models import LoginIp, RefreshToken, Session, StaffRole, Tenant, User, UtcDateTime, new_id
from ._passwords import check_policy, normalise_password
from ._principals import invalidate_user, mark_sessions_revoked, mint_access_token, unauthorized
from ._schemas import TokenPair
from ._secrets import looks_like_refresh_token, new_refresh_token
from ._settings import AuthSettings
from ._state import CACHE_NAMESPACE, AuthState, settings_of, state_of
from ._util import now

# Influencers start on Free, pending review: the marketing department's approval moves them to Internal.
PLAN_FOR = {"trader": "free", "influencer": "free", "company": "internal"}
REVIEW_FOR = {"influencer": "pending"}
LOCKED_TYPE = "https://botcriptofy.dev/problems/account-locked"
TOTP_TYPE = "https://botcriptofy.dev/problems/totp-required"


@dataclass
class Caller:
    """Where a request came from, for sessions, throttling and events."""

    ip: str | None
    user_agent: str | None


# -- throttling ---------------------------------------------------------------------------


async def throttle_ip(kernel: Kernel, action: str, caller: Caller) -> None:
    """Per-IP limit on login and sign-up attempts, through the rate limiter plugin when one is enabled."""
    limiter = kernel.rate_limiter()
    if limiter is None or caller.ip is None:
        return
    settings = settings_of(kernel)
    decision = await limiter.hit(
        RateLimit(key=f"auth:{action}-ip:{caller.ip}", limit=settings.login_ip_limit, period=60.0, burst=settings.login_ip_burst)
    )
    if not decision.allowed:
        retry = max(1, round(decision.retry_after or decision.reset_after or 1))
        raise ProblemError(
            429,
            "Too Many Requests",
            f"Too many {action} attempts from this address; retry in {retry} s.",
            type="https://botcriptofy.dev/problems/too-many-attempts",
            headers={"Retry-After": str(retry)},
            retry_after=retry,
        )


# -- tokens and sessions ------------------------------------------------------------------


async def open_session(kernel: Kernel, session: Any, *, user: User, method: str, caller: Caller, amr: list[str]) -> tuple[TokenPair, str]:
    """Create a login session (a refresh-token family) in ``session``; return its first token pair and its id."""
    state, settings = state_of(kernel), settings_of(kernel)
    moment = now()
    row = Session(
        id=new_id(),
        tenant_id=user.tenant_id,
        user_id=user.id,
        method=method,
        amr=" ".join(amr),
        ip=caller.ip,
        user_agent=caller.user_agent,
        created_at=moment,
        last_used_at=moment,
        expires_at=moment + timedelta(seconds=settings.session_max_age),
    )
    session.add(row)
    await session.flush()  # the refresh token references it (no ORM relationship orders the two inserts)
    refresh = _new_refresh(state, settings, row, moment)
    session.add(refresh[0])
    access, lifetime = mint_access_token(
        state, settings, user_id=user.id, tenant_id=user.tenant_id, session_id=row.id, kind=user.kind, amr=amr
    )
    return TokenPair(access_token=access, refresh_token=refresh[1], expires_in=lifetime), row.id


def _new_refresh(state: AuthState, settings: AuthSettings, row: Session, moment: datetime) -> tuple[RefreshToken, str]:
    secret = new_refresh_token()
    expires_at = min(moment + timedelta(seconds=settings.refresh_ttl), row.expires_at)
    token = RefreshToken(
        id=new_id(),
        tenant_id=row.tenant_id,
        session_id=row.id,
        token_hash=state.peppers.hash("refresh", secret),
        created_at=moment,
        expires_at=expires_at,
    )
    return token, secret


async def record_login_ip(kernel: Kernel, user: User, caller: Caller, *, method: str = "password") -> None:
    """Remember the address; publish :class:`NewIpLogin` the first time a known user logs in from it."""
    if caller.ip is None:
        return
    moment = now()
    try:
        async with _db.system(kernel, write=True) as session:
            known = (await session.scalars(sa.select(LoginIp).where(LoginIp.user_id == user.id))).all()
            match = next((row for row in known if row.ip == caller.ip), None)
            if match is not None:
                match.last_seen = moment
                return
            session.add(LoginIp(tenant_id=user.tenant_id, user_id=user.id, ip=caller.ip, first_seen=moment, last_seen=moment))
            if known:
                await _db.publish(
                    kernel,
                    NewIpLogin(
                        user_id=user.id,
                        tenant_id=user.tenant_id,
                        ip=caller.ip,
                        known_ips=len(known),
                        user_agent=caller.user_agent,
                        method=method,
                    ),
                    session,
                    tenant_id=user.tenant_id,
                )
    except IntegrityError:
        pass  # a concurrent login recorded the same address first


# -- sign-up ------------------------------------------------------------------------------


async def signup(kernel: Kernel, *, email: str, password: str, name: str, account_type: str, caller: Caller) -> dict[str, Any]:
    settings = settings_of(kernel)
    if not settings.allow_signup:
        raise ProblemError(403, "Sign-up closed", "New accounts are not being accepted (auth.allow_signup is off).")
    await throttle_ip(kernel, "signup", caller)
    password = normalise_password(password)
    check_policy(password, min_length=settings.pw_min_length, max_length=settings.pw_max_length, email=email, name=name)
    async with _db.system(kernel) as session:
        taken = await session.scalar(sa.select(User.id).where(User.email == email))
    if taken is not None:
        raise _email_taken()
    hashed = await state_of(kernel).passwords.hash(password)
    tenant_id = new_id()
    try:
        async with _db.tenant(kernel, tenant_id, write=True) as session:
            tenant = Tenant(
                id=tenant_id,
                type=account_type,
                name=name,
                plan=PLAN_FOR[account_type],
                review=REVIEW_FOR.get(account_type),
                created_at=now(),
            )
            session.add(tenant)
            await session.flush()
            user = User(
                id=new_id(),
                tenant_id=tenant_id,
                kind="user",
                email=email,
                name=name,
                password_hash=hashed,
                created_at=now(),
                updated_at=now(),
            )
            session.add(user)
            await session.flush()
            tokens, _ = await open_session(kernel, session, user=user, method="password", caller=caller, amr=["pwd"])
            # The address is unproved until the link sent to it comes back (sent only if this commits).
            await send_verification(kernel, session, user)
            await _db.publish(
                kernel,
                UserSignedUp(user_id=user.id, tenant_id=tenant_id, account_type=account_type, method="password", ip=caller.ip),
                session,
                tenant_id=tenant_id,
            )
    except IntegrityError as error:
        if "email" not in str(error.orig).lower():
            raise
        raise _email_taken() from None
    await mail_wait(kernel, VERIFY, email)  # counts against resending right away
    await record_login_ip(kernel, user, caller)
    return {"user": user, "tenant": tenant, "tokens": tokens}


def _email_taken() -> ProblemError:
    return ProblemError(
        409,
        "E-mail already registered",
        "An account with this e-mail already exists; log in instead.",
        errors=[{"field": "email", "message": "is already registered", "type": "unique", "in": "body"}],
    )


# -- login --------------------------------------------------------------------------------


def _locked(until: datetime) -> ProblemError:
    seconds = max(1, int((until - now()).total_seconds() + 0.999))
    return ProblemError(
        423,
        "Account locked",
        f"Too many failed logins from many addresses: this account is protected until {until.isoformat(timespec='seconds')} "
        f"({seconds} s). Log in from an address you used before, or with your two-factor code (totp_code), "
        "or ask support to unlock it.",
        type=LOCKED_TYPE,
        headers={"Retry-After": str(seconds)},
        locked_until=until.isoformat(),
        retry_after=seconds,
    )


async def _familiar(kernel: Kernel, user_id: str, ip: str | None) -> bool:
    """Whether the owner has logged in from ``ip`` before."""
    if ip is None:
        return False
    async with _db.system(kernel) as session:
        found = await session.scalar(sa.select(LoginIp.id).where(LoginIp.user_id == user_id, LoginIp.ip == ip).limit(1))
    return found is not None


async def login(kernel: Kernel, *, email: str, password: str, totp_code: str | None, caller: Caller) -> TokenPair:
    settings, state = settings_of(kernel), state_of(kernel)
    await throttle_ip(kernel, "login", caller)
    await _throttle.check(kernel, email, caller.ip)
    password = normalise_password(password)
    async with _db.system(kernel) as session:
        user = (await session.scalars(sa.select(User).where(User.email == email, User.kind == "user"))).first()
        tenant = await session.get(Tenant, user.tenant_id) if user is not None else None
    if user is None:
        await _unknown_user_failure(kernel, email, password, caller)
        raise unauthorized("Invalid e-mail or password.")
    guarded = user.locked_until is not None and user.locked_until > now()
    # Looked up whatever the password: a guarded account answers a wrong password and an unfamiliar
    # address alike, in the same time.
    familiar = await _familiar(kernel, user.id, caller.ip) if guarded else True
    matches, rehashed = await state.passwords.verify(user.password_hash, password)
    if not matches:
        await _failure(kernel, user, email, "bad_password", caller, guarded=guarded)
    if user.status != "active":
        raise ProblemError(403, "Account disabled", "This account is disabled; contact support.")
    assert tenant is not None
    staff = tenant.type == "company"
    needs_totp = staff and (user.super_admin or user.totp_enabled or settings.staff_totp_required)
    if guarded and not familiar:
        if not (user.totp_enabled and user.totp_secret and totp_code):
            await _failure(kernel, user, email, "guarded", caller, guarded=True)
        needs_totp = True  # the second factor lets the owner in from a new address
    amr = ["pwd"]
    step: int | None = None
    if needs_totp:
        if not user.totp_enabled or not user.totp_secret:
            fix = (
                "run `botcriptofy users reset-totp --email ...` to enrol it"
                if user.super_admin
                else "ask a super-admin to enrol it, or turn off auth.staff_totp_required"
            )
            raise ProblemError(
                403, "Two-factor enrolment required", f"This staff account must use TOTP but has none enrolled; {fix}.", type=TOTP_TYPE
            )
        if not totp_code:
            raise ProblemError(
                401,
                "Two-factor code required",
                "This account needs its 6-digit TOTP code: send it as totp_code.",
                type=TOTP_TYPE,
                totp_required=True,
                errors=[{"field": "totp_code", "message": "is required for this account", "type": "missing", "in": "body"}],
            )
        secret = state.cipher.decrypt(user.totp_secret, context=_totp.totp_context(user.id))
        step = _totp.accept(secret, totp_code, last_step=user.totp_last_step)
        if step is None:
            await _failure(kernel, user, email, "bad_totp", caller, detail="Invalid or already used TOTP code.", guarded=guarded)
        amr.append("otp")
    async with _db.system(kernel, write=True) as session:
        # A guard stays until it expires (or staff lift it): the owner logging in does not end the attack.
        values: dict[str, Any] = {} if guarded else {"failed_logins": 0, "failed_window_start": None, "locked_until": None}
        if rehashed:
            values["password_hash"] = rehashed
        if step is not None:
            values["totp_last_step"] = step
        update = sa.update(User).where(User.id == user.id)
        if step is not None:  # a concurrent login with the same code loses
            update = update.where(sa.or_(User.totp_last_step.is_(None), User.totp_last_step < step))
        if values:
            result = await session.execute(update.values(**values).execution_options(synchronize_session=False))
            if step is not None and result.rowcount == 0:
                raise unauthorized("Invalid or already used TOTP code.")
        tokens, sid = await open_session(kernel, session, user=user, method="password", caller=caller, amr=amr)
        await _db.publish(
            kernel,
            LoginSucceeded(user_id=user.id, tenant_id=user.tenant_id, session_id=sid, method="password", ip=caller.ip),
            session,
            tenant_id=user.tenant_id,
        )
    await _throttle.forget_pair(kernel, email, caller.ip)
    await record_login_ip(kernel, user, caller)
    return tokens


async def _failure(
    kernel: Kernel,
    user: User,
    email: str,
    reason: str,
    caller: Caller,
    *,
    detail: str = "Invalid e-mail or password.",
    guarded: bool = False,
) -> None:
    """Count a failed login: the address waits past its thresholds; many addresses guard the account. Always raises."""
    settings = settings_of(kernel)
    waiting = await _throttle.record_failure(kernel, email, caller.ip)
    moment = now()
    cutoff = moment - timedelta(seconds=settings.lockout_window)
    fresh = sa.or_(User.failed_window_start.is_(None), User.failed_window_start < cutoff)
    locked_until: datetime | None = user.locked_until if guarded else None
    async with _db.system(kernel, write=True) as session:
        result = await session.execute(
            sa.update(User)
            .where(User.id == user.id)
            .values(
                failed_logins=sa.case((fresh, 1), else_=User.failed_logins + 1),
                failed_window_start=sa.case((fresh, sa.literal(moment, UtcDateTime())), else_=User.failed_window_start),
            )
            .returning(User.failed_logins)
            .execution_options(synchronize_session=False)
        )
        failures = int(result.scalar_one())
        await _db.publish(
            kernel,
            LoginFailed(email=email, user_id=user.id, tenant_id=user.tenant_id, reason=reason, failures=failures, ip=caller.ip),
            session,
            tenant_id=user.tenant_id,
        )
        if waiting is not None and waiting[0] == "pair" and waiting[2] == settings.lockout_threshold:
            await _db.publish(
                kernel,
                LoginThrottled(
                    user_id=user.id, tenant_id=user.tenant_id, email=email, failures=waiting[2], retry_after=waiting[1], ip=caller.ip
                ),
                session,
                tenant_id=user.tenant_id,
            )
        if not guarded and failures >= settings.account_failure_ceiling:
            locked_until = moment + timedelta(seconds=settings.lockout_duration)
            await session.execute(
                sa.update(User)
                .where(User.id == user.id)
                .values(locked_until=locked_until, failed_logins=0, failed_window_start=None)
                .execution_options(synchronize_session=False)
            )
            await _db.publish(
                kernel,
                AccountLocked(
                    user_id=user.id, tenant_id=user.tenant_id, email=email, failures=failures, locked_until=locked_until, ip=caller.ip
                ),
                session,
                tenant_id=user.tenant_id,
            )
    _refuse(locked_until, waiting, detail)


def _refuse(locked_until: datetime | None, waiting: tuple[str, float, int] | None, detail: str) -> None:
    """The answer to a failed login, the same for accounts and unknown e-mails."""
    if locked_until is not None:
        raise _locked(locked_until)
    if waiting is not None:
        raise _throttle.wait_problem(waiting[1], waiting[0])
    raise unauthorized(detail)


async def _unknown_user_failure(kernel: Kernel, email: str, password: str, caller: Caller) -> None:
    """An unknown e-mail costs the same hash and is counted like a real account, so neither reveals it. Always raises."""
    settings = settings_of(kernel)
    cache = kernel.cache()
    key = "unknown-fail:" + hashlib.sha256(email.encode()).hexdigest()
    record = await cache.get(key, namespace=CACHE_NAMESPACE)
    if isinstance(record, dict) and record.get("locked_until", 0) > time.time():
        await _familiar(kernel, "", caller.ip)  # the same lookup a guarded account makes, for the same timing
    await state_of(kernel).passwords.verify(None, password)
    waiting = await _throttle.record_failure(kernel, email, caller.ip)
    moment = time.time()
    locked_until: datetime | None = None
    if isinstance(record, dict) and record.get("locked_until", 0) > moment:
        locked_until = datetime.fromtimestamp(record["locked_until"], tz=now().tzinfo)
        failures = int(record.get("count", 0))
    else:
        if not isinstance(record, dict) or record.get("start", 0) < moment - settings.lockout_window:
            record = {"count": 0, "start": moment}
        record = {**record, "count": record["count"] + 1}
        failures = record["count"]
        if failures >= settings.account_failure_ceiling:
            record = {"count": 0, "start": moment, "locked_until": moment + settings.lockout_duration}
            locked_until = datetime.fromtimestamp(record["locked_until"], tz=now().tzinfo)
        await cache.set(key, record, ttl=max(settings.lockout_window, settings.lockout_duration), namespace=CACHE_NAMESPACE)
    await kernel.events.publish(
        LoginFailed(email=email, user_id=None, tenant_id=None, reason="unknown_user", failures=failures, ip=caller.ip)
    )
    _refuse(locked_until, waiting, "Invalid e-mail or password.")


# -- refresh ------------------------------------------------------------------------------


async def refresh(kernel: Kernel, *, refresh_token: str, caller: Caller) -> TokenPair:
    """Rotate a refresh token. Presenting one that was already used revokes its whole family (RFC 9700 reuse detection)."""
    state, settings = state_of(kernel), settings_of(kernel)
    if not looks_like_refresh_token(refresh_token):
        raise unauthorized("The refresh token is not valid.")
    candidates = state.peppers.candidates("refresh", refresh_token)
    moment = now()
    reused: Session | None = None
    tokens: TokenPair | None = None
    async with _db.system(kernel, write=True) as session:
        row = (
            await session.execute(
                sa.select(RefreshToken, Session)
                .join(Session, Session.id == RefreshToken.session_id)
                .where(RefreshToken.token_hash.in_(candidates))
            )
        ).first()
        if row is None:
            raise unauthorized("The refresh token is not valid.")
        token, login = row
        if login.revoked_at is not None:
            raise unauthorized("This session has been logged out; log in again.", type_="https://botcriptofy.dev/problems/session-revoked")
        claimed = await session.execute(
            sa.update(RefreshToken)
            .where(RefreshToken.id == token.id, RefreshToken.used_at.is_(None))
            .values(used_at=moment)
            .execution_options(synchronize_session=False)
        )
        if claimed.rowcount == 0:
            reused = login
            await session.execute(
                sa.update(Session)
                .where(Session.id == login.id, Session.revoked_at.is_(None))
                .values(revoked_at=moment, revoke_reason="token_reuse")
                .execution_options(synchronize_session=False)
            )
            await _db.publish(
                kernel,
                RefreshTokenReused(user_id=login.user_id, tenant_id=login.tenant_id, session_id=login.id, ip=caller.ip),
                session,
                tenant_id=login.tenant_id,
            )
            await _db.publish(
                kernel,
                SessionsRevoked(user_id=login.user_id, tenant_id=login.tenant_id, session_ids=[login.id], reason="token_reuse"),
                session,
                tenant_id=login.tenant_id,
            )
        elif token.expires_at <= moment or login.expires_at <= moment:
            raise unauthorized("The refresh token has expired; log in again.")
        else:
            user = await session.get(User, login.user_id)
            if user is None or user.status != "active":
                raise unauthorized("This account is disabled.")
            login.last_used_at = moment
            if caller.ip:
                login.ip = caller.ip
            new_token, secret = _new_refresh(state, settings, login, moment)
            session.add(new_token)
            access, lifetime = mint_access_token(
                state,
                settings,
                user_id=user.id,
                tenant_id=user.tenant_id,
                session_id=login.id,
                kind=user.kind,
                amr=login.amr.split(),
                ttl=max(1, min(settings.access_ttl, int((login.expires_at - moment).total_seconds()))),  # never outlives its session
            )
            tokens = TokenPair(access_token=access, refresh_token=secret, expires_in=lifetime)
    if reused is not None:
        await mark_sessions_revoked(kernel, [reused.id])
        raise unauthorized(
            "This refresh token was already used: the session has been revoked as a precaution. Log in again.",
            type_="https://botcriptofy.dev/problems/refresh-token-reused",
        )
    assert tokens is not None
    return tokens


# -- logout and sessions ------------------------------------------------------------------


async def revoke_sessions(kernel: Kernel, *, tenant_id: str, user_id: str, session_ids: list[str] | None, reason: str) -> list[str]:
    """Revoke the given sessions of a user (all active ones when None); effective at once in every worker sharing the cache."""
    moment = now()
    async with _db.tenant(kernel, tenant_id, write=True) as session:
        query = sa.select(Session.id).where(Session.user_id == user_id, Session.revoked_at.is_(None))
        if session_ids is not None:
            query = query.where(Session.id.in_(session_ids))
        found = list((await session.scalars(query)).all())
        if found:
            await session.execute(
                sa.update(Session)
                .where(Session.id.in_(found))
                .values(revoked_at=moment, revoke_reason=reason)
                .execution_options(synchronize_session=False)
            )
            await _db.publish(
                kernel,
                SessionsRevoked(user_id=user_id, tenant_id=tenant_id, session_ids=found, reason=reason),
                session,
                tenant_id=tenant_id,
            )
    await mark_sessions_revoked(kernel, found)
    return found


async def list_sessions(kernel: Kernel, *, tenant_id: str, user_id: str) -> list[Session]:
    async with _db.tenant(kernel, tenant_id) as session:
        rows = (
            await session.scalars(
                sa.select(Session)
                .where(Session.user_id == user_id, Session.revoked_at.is_(None), Session.expires_at > now())
                .order_by(Session.created_at.desc())
            )
        ).all()
        return list(rows)


# -- passwords ----------------------------------------------------------------------------


async def change_password(kernel: Kernel, *, tenant_id: str, user_id: str, current: str, new: str, keep_session: str | None) -> int:
    settings, state = settings_of(kernel), state_of(kernel)
    current, new = normalise_password(current), normalise_password(new)
    async with _db.tenant(kernel, tenant_id) as session:
        user = await session.get(User, user_id)
        if user is None:
            raise ProblemError(404, "Not Found", "No such user.")
        stored, email, name = user.password_hash, user.email, user.name
    matches, _ = await state.passwords.verify(stored, current)
    if not matches:
        raise ProblemError(
            422,
            "Validation failed",
            "The current password is wrong.",
            errors=[{"field": "current_password", "message": "is wrong", "type": "value_error", "in": "body"}],
        )
    check_policy(new, min_length=settings.pw_min_length, max_length=settings.pw_max_length, email=email, name=name, field="new_password")
    hashed = await state.passwords.hash(new)
    async with _db.tenant(kernel, tenant_id) as session:
        await session.execute(
            sa.update(User).where(User.id == user_id).values(password_hash=hashed).execution_options(synchronize_session=False)
        )
        others = list(
            (
                await session.scalars(
                    sa.select(Session.id).where(
                        Session.user_id == user_id, Session.revoked_at.is_(None), Session.id != (keep_session or "")
                    )
                )
            ).all()
        )
    if others:
        await revoke_sessions(kernel, tenant_id=tenant_id, user_id=user_id, session_ids=others, reason="password_changed")
    await invalidate_user(kernel, user_id)
    await kernel.audit(
        "auth.password_changed",
        actor_id=user_id,
        actor_kind="user",
        tenant_id=tenant_id,
        target=f"user:{user_id}",
        subject=user_id,
        details={"sessions_revoked": len(others)},
    )
    return len(others)


# -- staff --------------------------------------------------------------------------------


async def company_tenant(session: Any) -> Tenant | None:
    found: Tenant | None = (await session.scalars(sa.select(Tenant).where(Tenant.type == "company"))).first()
    return found


async def set_roles(session: Any, *, tenant_id: str, user_id: str, roles: dict[str, str]) -> None:
    await session.execute(sa.delete(StaffRole).where(StaffRole.user_id == user_id).execution_options(synchronize_session=False))
    for department, role in sorted(roles.items()):
        session.add(StaffRole(tenant_id=tenant_id, user_id=user_id, department=department, role=role))
