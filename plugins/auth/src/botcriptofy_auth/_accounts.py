"""API keys, TOTP, profiles, staff and service principals: operations shared by the HTTP API and the CLI."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from botcriptofy import Actor, Kernel, ProblemError

from . import _db, _totp
from ._events import ApiKeyCreated, ApiKeyRevoked, StaffRolesChanged, TotpEnabled
from ._fields import FieldDecryptError
from ._models import ApiKey, Identity, StaffRole, Tenant, User, new_id
from ._passwords import check_policy, normalise_password
from ._permissions import catalogue_of
from ._principals import invalidate_user, mark_key_revoked
from ._rbac import role_permissions
from ._secrets import new_api_key
from ._service import company_tenant, set_roles
from ._state import PRINCIPALS_TAG, settings_of, state_of
from ._util import now

log = logging.getLogger("botcriptofy.auth")

API_KEYS_FEATURE = "api_keys"
# Without a billing plugin, the stored plan decides (SPEC §5: the Free plan has no API keys).
_PLANS_WITH_API_KEYS = {"pro", "enterprise", "internal"}
INFLUENCER_PLAN = "internal"


def not_found(what: str) -> ProblemError:
    return ProblemError(404, "Not Found", f"No {what} with this id exists in your account.")


def field_context(column: str, user_id: str) -> str:
    return f"auth_users.{column}:{user_id}"


# -- API keys -----------------------------------------------------------------------------


def email_not_verified(action: str) -> ProblemError:
    return ProblemError(
        403,
        "E-mail not verified",
        f"Verify this account's e-mail address before you {action}: open the link we sent, or ask for a new one with "
        "POST /v1/auth/email/verify/resend.",
        type="https://botcriptofy.dev/problems/email-not-verified",
        reason="email_not_verified",
    )


async def ensure_api_keys_allowed(kernel: Kernel, principal: dict[str, Any]) -> None:
    if principal["tenant_type"] == "company":
        return  # staff and agents are not customers
    if not principal["email_verified"]:
        raise email_not_verified("create API keys")
    entitlements = await kernel.entitlements(principal["tenant_id"])
    if entitlements is not None:
        allowed, plan = API_KEYS_FEATURE in entitlements.features, entitlements.plan
    else:
        allowed, plan = principal["plan"] in _PLANS_WITH_API_KEYS, principal["plan"]
    if not allowed:
        raise ProblemError(
            403,
            "Plan does not include API keys",
            f"The {plan} plan does not include API keys; the Pro plan does.",
            type="https://botcriptofy.dev/problems/feature-not-in-plan",
            feature=API_KEYS_FEATURE,
            plan=plan,
            upgrade_to="pro",
        )


MINT_SCOPE = "apikeys:mint"


def minting_key(actor: Actor) -> str | None:
    """The id of the API key making this request, refused unless it carries the dedicated ``apikeys:mint`` scope.

    A leaked key must not leave copies that outlive it: a key creates keys only when its owner gave it
    that scope by name (``apikeys:*`` does not count), and what it creates is revoked with it.
    """
    if actor.attributes.get("auth") != "api_key":
        return None
    if MINT_SCOPE not in actor.permissions:
        raise ProblemError(
            403,
            "API keys cannot create API keys",
            f"This request is authenticated with an API key, which may create keys only if it carries the '{MINT_SCOPE}' scope; "
            "log in to create keys, or create a key with that scope.",
            type="https://botcriptofy.dev/problems/api-key-cannot-mint",
        )
    return str(actor.attributes["api_key_id"])


async def create_api_key(
    kernel: Kernel,
    *,
    owner: Actor,
    principal: dict[str, Any],
    name: str,
    scopes: list[str],
    days: int | None,
    parent_key_id: str | None = None,
) -> tuple[ApiKey, str]:
    settings = settings_of(kernel)
    missing = [scope for scope in scopes if not owner.can(scope)]
    if missing:
        raise ProblemError(
            403,
            "Scope not held",
            f"An API key can carry only permissions its owner holds; you lack: {', '.join(missing)}.",
            errors=[{"field": "scopes", "message": f"'{m}' is not a permission you hold", "type": "scope", "in": "body"} for m in missing],
        )
    days = days or settings.apikey_default_days
    if days > settings.apikey_max_days:
        raise ProblemError(
            422,
            "Validation failed",
            f"An API key lives at most {settings.apikey_max_days} days.",
            errors=[
                {
                    "field": "expires_in_days",
                    "message": f"must be at most {settings.apikey_max_days}",
                    "type": "less_than_equal",
                    "in": "body",
                }
            ],
        )
    secret, prefix = new_api_key()
    moment = now()
    key = ApiKey(
        id=new_id(),
        tenant_id=principal["tenant_id"],
        user_id=principal["user_id"],
        name=name,
        prefix=prefix,
        key_hash=state_of(kernel).peppers.hash("api-key", secret),
        scopes=sorted(set(scopes)),
        created_at=moment,
        expires_at=moment + timedelta(days=days),
        parent_key_id=parent_key_id,
    )
    async with _db.tenant(kernel, principal["tenant_id"]) as session:
        session.add(key)
        await session.flush()
        await _db.publish(
            kernel,
            ApiKeyCreated(key_id=key.id, user_id=key.user_id, tenant_id=key.tenant_id, scopes=key.scopes, expires_at=key.expires_at),
            session,
            tenant_id=key.tenant_id,
        )
    return key, secret


async def list_api_keys(kernel: Kernel, principal: dict[str, Any]) -> list[ApiKey]:
    async with _db.tenant(kernel, principal["tenant_id"]) as session:
        return list(
            (
                await session.scalars(sa.select(ApiKey).where(ApiKey.user_id == principal["user_id"]).order_by(ApiKey.created_at.desc()))
            ).all()
        )


async def revoke_api_key(kernel: Kernel, principal: dict[str, Any], key_id: str) -> None:
    """Revoke one of the caller's keys, and every key it minted (and they minted), at once."""
    async with _db.tenant(kernel, principal["tenant_id"], write=True) as session:
        key = (await session.scalars(sa.select(ApiKey).where(ApiKey.id == key_id, ApiKey.user_id == principal["user_id"]))).first()
        if key is None:
            raise not_found("API key")
    revoked = await _revoke_with_descendants(kernel, key_id)
    for revoked_id in revoked:
        await mark_key_revoked(kernel, revoked_id)


async def _revoke_with_descendants(kernel: Kernel, key_id: str) -> list[str]:
    """Revoke ``key_id`` and the keys minted from it, transitively; return every id (platform-wide: service keys too)."""
    moment = now()
    found: list[str] = []
    async with _db.system(kernel, write=True) as session:
        frontier = [key_id]
        seen: set[str] = set()
        while frontier:
            rows = list((await session.scalars(sa.select(ApiKey).where(ApiKey.id.in_(frontier)))).all())
            seen.update(frontier)
            for row in rows:
                found.append(row.id)
                if row.revoked_at is None:
                    row.revoked_at = moment
                    await _db.publish(
                        kernel, ApiKeyRevoked(key_id=row.id, user_id=row.user_id, tenant_id=row.tenant_id), session, tenant_id=row.tenant_id
                    )
            children = (await session.scalars(sa.select(ApiKey.id).where(ApiKey.parent_key_id.in_(frontier)))).all()
            frontier = [child for child in children if child not in seen]
    return found


# -- TOTP ---------------------------------------------------------------------------------


async def totp_enroll(kernel: Kernel, principal: dict[str, Any]) -> tuple[str, str]:
    """Start (or restart) enrolment: a new secret, stored encrypted and not yet enabled."""
    if principal["kind"] != "user":
        raise ProblemError(403, "Forbidden", "Service principals do not use TOTP.")
    state, settings = state_of(kernel), settings_of(kernel)
    async with _db.tenant(kernel, principal["tenant_id"], write=True) as session:
        user = await session.get(User, principal["user_id"])
        if user is None:
            raise not_found("user")
        if user.totp_enabled:
            raise ProblemError(409, "TOTP already enabled", "Two-factor authentication is already on for this account.")
        secret = _totp.new_secret()
        user.totp_secret = state.cipher.encrypt(secret, context=_totp.totp_context(user.id))
        user.totp_last_step = None
        account = user.email or user.id
    return secret, _totp.provisioning_uri(secret, account=account, issuer=settings.totp_issuer)


def _accepted_step(state: Any, user: User, code: str, detail: str) -> int:
    """Check a TOTP code against the user's enrolment; return its time step or raise a 422 naming the field."""
    secret = state.cipher.decrypt(user.totp_secret, context=_totp.totp_context(user.id))
    step = _totp.accept(secret, code, last_step=user.totp_last_step)
    if step is None:
        raise ProblemError(
            422, "Validation failed", detail, errors=[{"field": "code", "message": "is not valid", "type": "totp", "in": "body"}]
        )
    return int(step)


async def totp_verify(kernel: Kernel, principal: dict[str, Any], code: str) -> None:
    """Finish enrolment with a first valid code; two-factor is enabled from then on."""
    state = state_of(kernel)
    async with _db.tenant(kernel, principal["tenant_id"], write=True) as session:
        user = await session.get(User, principal["user_id"])
        if user is None:
            raise not_found("user")
        if user.totp_enabled:
            raise ProblemError(409, "TOTP already enabled", "Two-factor authentication is already on for this account.")
        if not user.totp_secret:
            raise ProblemError(409, "No TOTP enrolment", "Start with POST /v1/auth/totp/enroll.")
        step = _accepted_step(state, user, code, "The code is not valid for this enrolment; check the device's clock.")
        user.totp_enabled = True
        user.totp_last_step = step
        await _db.publish(kernel, TotpEnabled(user_id=user.id, tenant_id=user.tenant_id), session, tenant_id=user.tenant_id)
    await invalidate_user(kernel, principal["user_id"])


async def totp_disable(kernel: Kernel, principal: dict[str, Any], code: str) -> None:
    state = state_of(kernel)
    if principal["super_admin"]:
        raise ProblemError(403, "TOTP required", "The super-admin must keep two-factor authentication on.")
    async with _db.tenant(kernel, principal["tenant_id"], write=True) as session:
        user = await session.get(User, principal["user_id"])
        if user is None or not user.totp_enabled or not user.totp_secret:
            raise ProblemError(409, "TOTP not enabled", "Two-factor authentication is not on for this account.")
        _accepted_step(state, user, code, "The code is not valid.")
        user.totp_enabled = False
        user.totp_secret = None
        user.totp_last_step = None
    await invalidate_user(kernel, principal["user_id"])
    await kernel.audit(
        "auth.totp_disabled",
        actor_id=principal["user_id"],
        actor_kind="user",
        tenant_id=principal["tenant_id"],
        target=f"user:{principal['user_id']}",
        subject=principal["user_id"],
    )


# -- profile ------------------------------------------------------------------------------


async def update_profile(kernel: Kernel, principal: dict[str, Any], changes: dict[str, Any]) -> None:
    cipher = state_of(kernel).cipher
    async with _db.tenant(kernel, principal["tenant_id"], write=True) as session:
        user = await session.get(User, principal["user_id"])
        if user is None:
            raise not_found("user")
        if "name" in changes and changes["name"] is not None:
            user.name = changes["name"]
        for column in ("phone", "tax_id"):
            if column in changes:
                value = changes[column]
                setattr(user, column, cipher.encrypt(value, context=field_context(column, user.id)) if value else None)
    await invalidate_user(kernel, principal["user_id"])


async def reload_principal(kernel: Kernel, user_id: str) -> dict[str, Any]:
    from ._principals import load_principal

    async with _db.system(kernel) as session:
        principal = await load_principal(kernel, session, user_id)
    if principal is None:
        raise not_found("user")
    return principal


def decrypt_field(kernel: Kernel, principal: dict[str, Any], column: str) -> str | None:
    stored = principal.get(column)
    if not stored:
        return None
    try:
        return state_of(kernel).cipher.decrypt(stored, context=field_context(column, principal["user_id"]))
    except FieldDecryptError as error:  # a key removed before `users rotate-field-keys` ran: say so, do not fail the request
        log.error("cannot decrypt %s of user %s: %s", column, principal["user_id"], error)
        return None


async def rotate_field_keys(kernel: Kernel, *, batch: int = 500) -> int:
    """Re-encrypt every encrypted field not under the current key; return how many values changed."""
    cipher = state_of(kernel).cipher
    changed = 0
    last = ""
    while True:
        async with _db.system(kernel, write=True) as session:
            users = list((await session.scalars(sa.select(User).where(User.id > last).order_by(User.id).limit(batch))).all())
            for user in users:
                for column, context in (
                    ("phone", field_context("phone", user.id)),
                    ("tax_id", field_context("tax_id", user.id)),
                    ("totp_secret", _totp.totp_context(user.id)),
                ):
                    stored = getattr(user, column)
                    if stored and cipher.needs_rotation(stored):
                        setattr(user, column, cipher.encrypt(cipher.decrypt(stored, context=context), context=context))
                        changed += 1
        if len(users) < batch:
            break
        last = users[-1].id
    await kernel.cache().invalidate_tags(PRINCIPALS_TAG)  # cached callers hold the old ciphertexts
    return changed


# -- staff and service principals ---------------------------------------------------------


async def ensure_company(session: Any, name: str = "BotCriptoFy") -> Tenant:
    company = await company_tenant(session)
    if company is None:
        company = Tenant(id=new_id(), type="company", name=name, plan="internal", created_at=now())
        session.add(company)
        await session.flush()
    return company


async def create_staff(
    kernel: Kernel,
    *,
    email: str,
    name: str,
    password: str,
    roles: dict[str, str],
    super_admin: bool = False,
    by: str | None = None,
    totp_secret: str | None = None,
) -> User:
    settings, state = settings_of(kernel), state_of(kernel)
    password = normalise_password(password)
    check_policy(password, min_length=settings.pw_min_length, max_length=settings.pw_max_length, email=email, name=name)
    hashed = await state.passwords.hash(password)
    try:
        async with _db.system(kernel, write=True) as session:
            company = await ensure_company(session)
            user = User(
                id=new_id(),
                tenant_id=company.id,
                kind="user",
                email=email,
                name=name,
                password_hash=hashed,
                super_admin=super_admin,
                email_verified=False,
                created_at=now(),
                updated_at=now(),
            )
            if totp_secret is not None:
                user.totp_secret = state.cipher.encrypt(totp_secret, context=_totp.totp_context(user.id))
                user.totp_enabled = True
            session.add(user)
            await session.flush()
            await set_roles(session, tenant_id=company.id, user_id=user.id, roles=roles)
            await _db.publish(
                kernel, StaffRolesChanged(user_id=user.id, tenant_id=company.id, roles=roles, changed_by=by), session, tenant_id=company.id
            )
    except IntegrityError:
        raise ProblemError(
            409,
            "E-mail already registered",
            "An account with this e-mail already exists.",
            errors=[{"field": "email", "message": "is already registered", "type": "unique", "in": "body"}],
        ) from None
    return user


async def change_staff_roles(kernel: Kernel, *, company_id: str, user_id: str, roles: dict[str, str], by: str | None) -> None:
    async with _db.tenant(kernel, company_id, write=True) as session:
        user = await session.get(User, user_id)
        if user is None or user.kind != "user":
            raise not_found("staff member")
        await set_roles(session, tenant_id=company_id, user_id=user_id, roles=roles)
        await _db.publish(
            kernel, StaffRolesChanged(user_id=user_id, tenant_id=company_id, roles=roles, changed_by=by), session, tenant_id=company_id
        )
    await invalidate_user(kernel, user_id)


async def list_staff(kernel: Kernel, company_id: str) -> list[tuple[User, dict[str, str]]]:
    async with _db.tenant(kernel, company_id) as session:
        users = list((await session.scalars(sa.select(User).order_by(User.created_at))).all())
        roles = (await session.scalars(sa.select(StaffRole))).all()
    by_user: dict[str, dict[str, str]] = {}
    for role in roles:
        by_user.setdefault(role.user_id, {})[role.department] = role.role
    return [(user, by_user.get(user.id, {})) for user in users]


async def service_principal(kernel: Kernel, department: str, role: str) -> tuple[User, Tenant]:
    """Return the service principal acting for ``department`` with ``role`` (creating it the first time)."""
    try:
        async with _db.system(kernel, write=True) as session:
            company = await ensure_company(session)
            name = f"agent-{department}-{role}"
            user = (
                await session.scalars(sa.select(User).where(User.tenant_id == company.id, User.kind == "service", User.name == name))
            ).first()
            if user is None:
                user = User(
                    id=new_id(),
                    tenant_id=company.id,
                    kind="service",
                    email=None,
                    name=name,
                    department=department,
                    created_at=now(),
                    updated_at=now(),
                )
                session.add(user)
                await session.flush()
                session.add(StaffRole(tenant_id=company.id, user_id=user.id, department=department, role=role))
            return user, company
    except IntegrityError:  # created concurrently
        return await service_principal(kernel, department, role)


async def create_service_key(
    kernel: Kernel, *, department: str, role: str, name: str | None, days: int | None, parent_key_id: str | None = None
) -> tuple[ApiKey, str, User]:
    from ._principals import load_principal

    user, _ = await service_principal(kernel, department, role)
    async with _db.system(kernel) as session:
        principal = await load_principal(kernel, session, user.id)
    assert principal is not None
    scopes = sorted(role_permissions(department, role, (await catalogue_of(kernel)).grants))
    owner = Actor(id=user.id, kind="service", tenant_id=principal["tenant_id"], permissions=frozenset(principal["permissions"]))
    key, secret = await create_api_key(
        kernel, owner=owner, principal=principal, name=name or f"{department} agent", scopes=scopes, days=days, parent_key_id=parent_key_id
    )
    return key, secret, user


async def link_identity(session: Any, *, user: User, provider: str, subject: str, email: str | None) -> None:
    session.add(Identity(tenant_id=user.tenant_id, user_id=user.id, provider=provider, subject=subject, email=email, created_at=now()))


async def set_blocked(kernel: Kernel, *, user_id: str, blocked: bool, reason: str | None, by: str) -> None:
    """Disable (or re-enable) any account, platform-wide: a staff action, so a system session."""
    from ._events import UserBlocked
    from ._service import revoke_sessions

    async with _db.system(kernel, write=True) as session:
        user = await session.get(User, user_id)
        if user is None:
            raise not_found("user")
        if user.super_admin and blocked:
            raise ProblemError(403, "Forbidden", "A super-admin cannot be blocked.")
        user.status = "disabled" if blocked else "active"
        tenant_id = user.tenant_id
        keys = list((await session.scalars(sa.select(ApiKey.id).where(ApiKey.user_id == user_id, ApiKey.revoked_at.is_(None)))).all())
        await _db.publish(
            kernel, UserBlocked(user_id=user_id, tenant_id=tenant_id, blocked=blocked, reason=reason, by=by), session, tenant_id=tenant_id
        )
    if blocked:
        await revoke_sessions(kernel, tenant_id=tenant_id, user_id=user_id, session_ids=None, reason="blocked")
        for key_id in keys:  # the keys stay valid in the database but their owner is disabled; drop cached copies
            await kernel.cache().invalidate_tags(f"auth:apikey:{key_id}")
    await invalidate_user(kernel, user_id)


async def revoke_user_sessions(kernel: Kernel, *, user_id: str) -> int:
    from ._service import revoke_sessions

    async with _db.system(kernel) as session:
        user = await session.get(User, user_id)
        if user is None:
            raise not_found("user")
        tenant_id = user.tenant_id
    return len(await revoke_sessions(kernel, tenant_id=tenant_id, user_id=user_id, session_ids=None, reason="revoked_by_staff"))


# -- influencer review --------------------------------------------------------------------


async def list_influencers(kernel: Kernel, *, review: str | None) -> list[tuple[Tenant, list[str]]]:
    async with _db.system(kernel) as session:
        query = sa.select(Tenant).where(Tenant.type == "influencer").order_by(Tenant.created_at.desc()).limit(500)
        if review is not None:
            query = query.where(Tenant.review == review)
        tenants = list((await session.scalars(query)).all())
        emails: dict[str, list[str]] = {}
        if tenants:
            rows = await session.execute(sa.select(User.tenant_id, User.email).where(User.tenant_id.in_([t.id for t in tenants])))
            for tenant_id, email in rows.all():
                if email:
                    emails.setdefault(tenant_id, []).append(email)
    return [(tenant, sorted(emails.get(tenant.id, []))) for tenant in tenants]


async def approve_influencer(kernel: Kernel, tenant_id: str, *, by: str) -> Tenant:
    """Move a pending influencer tenant to the Internal plan and publish :class:`InfluencerApproved` (billing assigns the plan)."""
    from ._events import InfluencerApproved

    async with _db.system(kernel, write=True) as session:
        tenant = await session.get(Tenant, tenant_id)
        if tenant is None or tenant.type != "influencer":
            raise not_found("influencer")
        if tenant.review == "approved":
            raise ProblemError(409, "Already approved", "This influencer was approved already.")
        tenant.review, tenant.plan, tenant.reviewed_by = "approved", INFLUENCER_PLAN, by
        user_ids = list((await session.scalars(sa.select(User.id).where(User.tenant_id == tenant_id))).all())
        await _db.publish(
            kernel,
            InfluencerApproved(tenant_id=tenant_id, user_ids=user_ids, plan=INFLUENCER_PLAN, approved_by=by),
            session,
            tenant_id=tenant_id,
        )
    for user_id in user_ids:
        await invalidate_user(kernel, user_id)
    return tenant


async def mark_email_verified(kernel: Kernel, *, email: str, by: str) -> bool:
    """Mark the account at ``email`` verified without the link (an operator's decision); False when no account has it."""
    from ._events import EmailVerified

    async with _db.system(kernel, write=True) as session:
        user = (await session.scalars(sa.select(User).where(User.email == email))).first()
        if user is None:
            return False
        user.email_verified = True
        user_id, tenant_id = user.id, user.tenant_id
        await _db.publish(kernel, EmailVerified(user_id=user_id, tenant_id=tenant_id), session, tenant_id=tenant_id)
    await invalidate_user(kernel, user_id)
    await kernel.audit(
        "auth.email_verified", actor_id=by, actor_kind="operator", tenant_id=tenant_id, target=f"user:{user_id}", subject=user_id
    )
    return True


async def unlock(kernel: Kernel, *, user_id: str) -> None:
    """Lift the brute-force guard (``locked_until``) and reset the account's failure count."""
    async with _db.system(kernel, write=True) as session:
        result = await session.execute(
            sa.update(User)
            .where(User.id == user_id)
            .values(locked_until=None, failed_logins=0, failed_window_start=None)
            .execution_options(synchronize_session=False)
        )
        if result.rowcount == 0:
            raise not_found("user")
