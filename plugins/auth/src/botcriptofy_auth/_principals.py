"""Who is calling: access tokens and API keys resolved to :class:`botcriptofy.Actor`, with caching and revocation.

The database is the truth; the cache (``kernel.cache()``, shared between workers when the cache
plugin is configured) keeps a resolved caller for ``principal_cache_ttl`` seconds, tagged by user
so a role change invalidates it at once. A revocation replaces the cached caller with a tombstone
(after writing a marker that closes the race with a concurrent database read), so a request costs
one cache read and a logout is effective on the next request in every worker sharing the cache.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import datetime
from types import MappingProxyType
from typing import Any

import sqlalchemy as sa
from starlette.requests import Request

from botcriptofy import Actor, Kernel, ProblemError

from . import _db
from ._keys import InvalidToken
from ._models import ApiKey, Session, StaffRole, Tenant, User
from ._permissions import catalogue_of
from ._rbac import customer_permissions, role_permissions, staff_permissions
from ._secrets import parse_api_key
from ._settings import AuthSettings
from ._state import CACHE_NAMESPACE, PRINCIPALS_TAG, AuthState, settings_of, state_of
from ._util import now

BEARER = {"WWW-Authenticate": 'Bearer error="invalid_token"'}


def user_tag(user_id: str) -> str:
    return f"auth:user:{user_id}"


def key_tag(key_id: str) -> str:
    return f"auth:apikey:{key_id}"


def unauthorized(detail: str, *, type_: str = "https://botcriptofy.dev/problems/invalid-credentials") -> ProblemError:
    return ProblemError(401, "Unauthorized", detail, type=type_, headers=BEARER)


# -- access tokens ------------------------------------------------------------------------


def mint_access_token(
    state: AuthState,
    settings: AuthSettings,
    *,
    user_id: str,
    tenant_id: str,
    session_id: str,
    kind: str,
    amr: list[str],
    ttl: int | None = None,
) -> tuple[str, int]:
    issued = int(time.time())
    lifetime = ttl or settings.access_ttl
    claims = {
        "iss": settings.issuer,
        "aud": settings.audience,
        "sub": user_id,
        "tid": tenant_id,
        "sid": session_id,
        "knd": kind,
        "amr": amr,
        "typ": "access",
        "iat": issued,
        "nbf": issued,
        "exp": issued + lifetime,
        "jti": uuid.uuid4().hex,
    }
    return state.keyring.sign(claims), lifetime


# -- principals ---------------------------------------------------------------------------


def permissions_for(principal: dict[str, Any], extra: Mapping[str, Iterable[str]]) -> frozenset[str]:
    """What the principal holds: its roles or account type, over the catalogue's grants (``current_grants``)."""
    if principal["kind"] == "service":
        department = principal.get("department")
        role = principal["roles"].get(department or "", "viewer")
        return role_permissions(department, role, extra) if department else frozenset()
    if principal["tenant_type"] == "company":
        return staff_permissions(principal["roles"], extra)
    return customer_permissions(principal["tenant_type"], extra)


async def load_principal(kernel: Kernel, session: Any, user_id: str) -> dict[str, Any] | None:
    """Read a user, their tenant and roles as a plain, cacheable mapping (None when the user is gone)."""
    row = (await session.execute(sa.select(User, Tenant).join(Tenant, Tenant.id == User.tenant_id).where(User.id == user_id))).first()
    if row is None:
        return None
    user, tenant = row
    roles = {r.department: r.role for r in (await session.scalars(sa.select(StaffRole).where(StaffRole.user_id == user_id))).all()}
    principal: dict[str, Any] = {
        "user_id": user.id,
        "tenant_id": tenant.id,
        "tenant_type": tenant.type,
        "tenant_name": tenant.name,
        "plan": tenant.plan,
        "review": tenant.review,
        "kind": user.kind,
        "email": user.email,
        "name": user.name,
        "email_verified": user.email_verified,
        "status": user.status,
        "super_admin": bool(user.super_admin) and tenant.type == "company",
        "department": user.department,
        "roles": roles,
        "totp_enabled": user.totp_enabled,
        "created_at": user.created_at.isoformat(),
        "phone": user.phone,
        "tax_id": user.tax_id,
    }
    principal["permissions"] = sorted(permissions_for(principal, (await catalogue_of(kernel)).grants))
    return principal


async def invalidate_user(kernel: Kernel, user_id: str) -> None:
    """Forget every cached resolution of ``user_id`` (sessions and API keys) after a change to them."""
    await kernel.cache().invalidate_tags(user_tag(user_id))


REVOKED: dict[str, Any] = {"revoked": True}  # the tombstone that replaces a revoked session's cached caller


async def mark_sessions_revoked(kernel: Kernel, session_ids: list[str]) -> None:
    """After the database commit: write the revocation marker, then replace each cached caller with a tombstone.

    A request finds the tombstone with the one cache read it makes anyway (an in-process hit with the
    two-layer cache). The marker, which only revokers write, closes the race with a worker that read
    the session from the database just before the revocation and caches it just after: that worker
    checks the marker after caching (see ``_cache_principal``).
    """
    cache = kernel.cache()
    ttl = settings_of(kernel).access_ttl + 60
    for sid in session_ids:
        await cache.set(f"revoked:{sid}", 1, ttl=ttl, namespace=CACHE_NAMESPACE)
        await cache.set(f"principal:{sid}", REVOKED, ttl=ttl, namespace=CACHE_NAMESPACE)


async def mark_key_revoked(kernel: Kernel, key_id: str) -> None:
    cache = kernel.cache()
    await cache.set(f"revoked-key:{key_id}", 1, ttl=max(settings_of(kernel).principal_cache_ttl, 1) + 60, namespace=CACHE_NAMESPACE)
    await cache.invalidate_tags(key_tag(key_id))


# -- resolving the caller -----------------------------------------------------------------


MEMO_MAX = 50_000  # credentials remembered per worker; past it the memo starts again empty


def _credential_headers(request: Request) -> tuple[str | None, str | None]:
    """The first ``X-API-Key`` and ``Authorization`` header values, read from the raw ASGI headers in one pass.

    As ``request.headers.get`` reads them (names lower-case, values latin-1) without building the
    request's header map, which cost more than the rest of a remembered caller's check.
    """
    api_key = authorization = None
    for name, value in request.scope["headers"]:
        if name == b"authorization":
            if authorization is None:
                authorization = value.decode("latin-1")
                if api_key is not None:
                    break
        elif name == b"x-api-key" and api_key is None:
            api_key = value.decode("latin-1")
            if authorization is not None:
                break
    return api_key, authorization


def _credentials(request: Request, headers: tuple[str | None, str | None] | None = None) -> tuple[str, bool] | None:
    """The request's credential and whether it is an API key; None without one (or with another scheme).

    ``headers`` are the request's :func:`_credential_headers` when the caller has read them already.
    """
    api_key, authorization = _credential_headers(request) if headers is None else headers
    if api_key is not None:
        return api_key.strip(), True
    if authorization is None:
        return None
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return None
    credentials = credentials.strip()
    return credentials, credentials.startswith("bcf_")


async def cached_actor(kernel: Kernel, request: Request, headers: tuple[str | None, str | None] | None = None) -> Actor | None:
    """The caller resolved earlier in this worker for the same credentials, if that resolution still holds.

    No signature check, no database: the memo entry names the cache entry its actor was built from,
    and is used only while the cache still holds that entry (the very object with in-process copies,
    an equal one when each read decodes anew). A logout or revocation (tombstone),
    a role change (tag invalidation) or an API key's revocation replaces or drops that entry in every
    worker, so the memo stops answering at once. With ``strict_revocation`` the revocation marker is
    read as well, as on the full path.
    """
    found = _credentials(request, headers)
    if found is None:
        return None
    state = state_of(kernel)
    memo = state.resolved.get(found[0])
    if memo is None:
        return None
    cache_key, entry, actor, expires_at = memo
    if expires_at <= time.time() or state.catalogue_generation != kernel.generation:
        state.resolved.pop(found[0], None)
        return None
    cache = kernel.cache()
    current = await _cached(kernel, request.scope, cache_key)
    if current is not entry:
        # A cache without in-process copies (the redis backend) decodes a new object on every read: the same
        # content is still the same resolution. A tombstone, a dropped entry or a changed caller is not.
        if current is None or current != entry:
            state.resolved.pop(found[0], None)
            return None
        state.resolved[found[0]] = (cache_key, current, actor, expires_at)
    settings = settings_of(kernel)
    if settings.strict_revocation:
        marker = f"revoked-key:{actor.attributes['api_key_id']}" if found[1] else f"revoked:{actor.attributes['session_id']}"
        if await cache.get(marker, namespace=CACHE_NAMESPACE) is not None:
            state.resolved.pop(found[0], None)
            return None
    if found[1]:
        await _touch(kernel, state, settings, actor.attributes["api_key_id"])
    return actor  # type: ignore[no-any-return]


_READ = "botcriptofy_auth.read"  # the caller's cache entry read earlier in this request: (cache key, value)


async def _cached(kernel: Kernel, scope: dict[str, Any] | None, cache_key: str) -> Any:
    """The caller's cache entry, read once per request (the memo check and the full path share the read)."""
    if scope is not None:
        found = scope.get(_READ)
        if found is not None and found[0] == cache_key:
            return found[1]
    value = await kernel.cache().get(cache_key, namespace=CACHE_NAMESPACE)
    if scope is not None:
        scope[_READ] = (cache_key, value)
    return value


def _remember(state: AuthState, credential: str, cache_key: str, entry: Any, actor: Actor, expires_at: float) -> None:
    if len(state.resolved) >= MEMO_MAX:
        state.resolved.clear()
    # Every later request with these credentials gets this very object: its attributes are read-only, so a
    # route that tried to change them fails instead of leaking the change into other requests.
    shared = replace(actor, attributes=MappingProxyType(dict(actor.attributes)))
    state.resolved[credential] = (cache_key, entry, shared, expires_at)


async def actor_from_request(kernel: Kernel, request: Request) -> Actor | None:
    headers = api_key, authorization = _credential_headers(request)
    if api_key is None and authorization is None:
        return None
    memo = await cached_actor(kernel, request, headers)
    if memo is not None:
        return memo
    await catalogue_of(kernel)  # a new generation's catalogue invalidates cached callers before one is read
    scope = request.scope
    if api_key is not None:
        return await _actor_from_api_key(kernel, api_key.strip(), scope)
    assert authorization is not None
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return None  # another scheme: leave it to another identity plugin
    credentials = credentials.strip()
    if not credentials:
        raise unauthorized("The Authorization header has no token after 'Bearer'.")
    if credentials.startswith("bcf_"):
        return await _actor_from_api_key(kernel, credentials, scope)
    return await _actor_from_access_token(kernel, credentials, scope)


async def _actor_from_access_token(kernel: Kernel, token: str, scope: dict[str, Any] | None = None) -> Actor:
    state = state_of(kernel)
    settings = settings_of(kernel)
    try:
        claims = state.keyring.verify(token, audience=settings.audience, issuer=settings.issuer, now=time.time())
    except InvalidToken as error:
        raise unauthorized(f"{str(error).capitalize()}; log in again or refresh.") from None
    sid = claims.get("sid")
    if not isinstance(sid, str):
        raise unauthorized("The access token names no session.")
    cache = kernel.cache()
    principal = await _cached(kernel, scope, f"principal:{sid}")
    if principal is not None and settings.strict_revocation and await cache.get(f"revoked:{sid}", namespace=CACHE_NAMESPACE) is not None:
        principal = REVOKED
    if principal is None:
        principal = await _load_session_principal(kernel, sid, claims["sub"])
        if principal is REVOKED:
            await cache.set(f"principal:{sid}", REVOKED, ttl=settings.access_ttl + 60, namespace=CACHE_NAMESPACE)
        elif settings.principal_cache_ttl > 0:
            await cache.set(
                f"principal:{sid}",
                principal,
                ttl=min(settings.principal_cache_ttl, claims["exp"] - time.time() + 5),
                tags=(user_tag(principal["user_id"]), PRINCIPALS_TAG),
                namespace=CACHE_NAMESPACE,
            )
            # Revoked while we were reading the database? The revoker wrote its marker before its tombstone.
            if await cache.get(f"revoked:{sid}", namespace=CACHE_NAMESPACE) is not None:
                await cache.set(f"principal:{sid}", REVOKED, ttl=settings.access_ttl + 60, namespace=CACHE_NAMESPACE)
                principal = REVOKED
    if principal.get("revoked"):
        raise unauthorized("This session has been logged out.", type_="https://botcriptofy.dev/problems/session-revoked")
    if principal["user_id"] != claims["sub"] or principal["tenant_id"] != claims.get("tid"):
        raise unauthorized("The access token does not match its session.")
    if principal["status"] != "active":
        raise unauthorized("This account is disabled.")
    kind = "service" if principal["kind"] == "service" else "user"
    actor = Actor(
        id=principal["user_id"],
        kind=kind,
        tenant_id=principal["tenant_id"],
        permissions=frozenset(principal["permissions"]),
        super_admin=principal["super_admin"],
        attributes={
            "auth": "session",
            "session_id": sid,
            "principal": principal,
            "amr": claims.get("amr", []),
            **identity_facts(principal),
        },
    )
    if settings.principal_cache_ttl > 0:
        _remember(state, token, f"principal:{sid}", principal, actor, float(claims["exp"]))
    return actor


async def _load_session_principal(kernel: Kernel, sid: str, user_id: str) -> dict[str, Any]:
    async with _db.system(kernel) as session:
        row = await session.get(Session, sid)
        if row is None or row.user_id != user_id:
            raise unauthorized("The access token's session does not exist.")
        if row.revoked_at is not None:
            return REVOKED  # cached as a tombstone, so a replayed revoked token does not reach the database again
        if row.expires_at <= now():
            raise unauthorized("This session has expired; log in again.")
        principal = await load_principal(kernel, session, user_id)
    if principal is None:
        raise unauthorized("The account of this access token no longer exists.")
    return principal


async def _actor_from_api_key(kernel: Kernel, key: str, scope: dict[str, Any] | None = None) -> Actor:
    if parse_api_key(key) is None:
        raise unauthorized("The API key is malformed.")
    state = state_of(kernel)
    settings = settings_of(kernel)
    cache = kernel.cache()
    candidates = state.peppers.candidates("api-key", key)
    cache_key = "apikey:" + hashlib.sha256(candidates[0].encode()).hexdigest()
    resolved = await _cached(kernel, scope, cache_key)
    if resolved is None:
        resolved = await _load_api_key(kernel, candidates)
        if settings.principal_cache_ttl > 0:
            ttl = min(settings.principal_cache_ttl, max(resolved["expires_at"] - time.time(), 1))
            await cache.set(
                cache_key,
                resolved,
                ttl=ttl,
                tags=(user_tag(resolved["user_id"]), key_tag(resolved["key_id"]), PRINCIPALS_TAG),
                namespace=CACHE_NAMESPACE,
            )
            # Revoked while we were reading the database? The revoker wrote its marker before dropping cached copies.
            if await cache.get(f"revoked-key:{resolved['key_id']}", namespace=CACHE_NAMESPACE) is not None:
                await cache.delete(cache_key, namespace=CACHE_NAMESPACE)
                raise unauthorized("This API key has been revoked.", type_="https://botcriptofy.dev/problems/api-key-revoked")
    elif settings.strict_revocation and await cache.get(f"revoked-key:{resolved['key_id']}", namespace=CACHE_NAMESPACE) is not None:
        raise unauthorized("This API key has been revoked.", type_="https://botcriptofy.dev/problems/api-key-revoked")
    if resolved["expires_at"] <= time.time():
        raise unauthorized("This API key has expired; create a new one.")
    principal = resolved["principal"]
    if principal["status"] != "active":
        raise unauthorized("The account that owns this API key is disabled.")
    await _touch(kernel, state, settings, resolved["key_id"])
    actor = Actor(
        id=principal["user_id"],
        kind="service" if principal["kind"] == "service" else "api_key",
        tenant_id=principal["tenant_id"],
        permissions=frozenset(resolved["permissions"]),
        super_admin=False,
        attributes={"auth": "api_key", "api_key_id": resolved["key_id"], "principal": principal, **identity_facts(principal)},
    )
    if settings.principal_cache_ttl > 0:
        _remember(state, key, cache_key, resolved, actor, float(resolved["expires_at"]))
    return actor


async def _load_api_key(kernel: Kernel, candidates: list[str]) -> dict[str, Any]:
    async with _db.system(kernel) as session:
        key = (await session.scalars(sa.select(ApiKey).where(ApiKey.key_hash.in_(candidates)))).first()
        if key is None:
            raise unauthorized("The API key is not valid.")
        if key.revoked_at is not None:
            raise unauthorized("This API key has been revoked.", type_="https://botcriptofy.dev/problems/api-key-revoked")
        principal = await load_principal(kernel, session, key.user_id)
    if principal is None:
        raise unauthorized("The account that owns this API key no longer exists.")
    owner = Actor(
        id=principal["user_id"],
        kind="user",
        tenant_id=principal["tenant_id"],
        permissions=frozenset(principal["permissions"]),
        super_admin=principal["super_admin"],
    )
    return {
        "key_id": key.id,
        "user_id": key.user_id,
        "expires_at": key.expires_at.timestamp(),
        "permissions": sorted(scope for scope in key.scopes if owner.can(scope)),
        "principal": principal,
    }


async def _touch(kernel: Kernel, state: AuthState, settings: AuthSettings, key_id: str) -> None:
    """Record the key's last use, at most once per ``apikey_touch_interval`` per worker."""
    moment = time.monotonic()
    last = state.touched.get(key_id)
    if last is not None and moment - last < settings.apikey_touch_interval:
        return
    state.touched[key_id] = moment
    if len(state.touched) > 100_000:
        state.touched.clear()
    async with _db.system(kernel) as session:
        await session.execute(
            sa.update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=now()).execution_options(synchronize_session=False)
        )


def identity_facts(principal: dict[str, Any]) -> dict[str, Any]:
    """The kernel's well-known actor attributes (``email``, ``name``, ``email_verified``) other plugins may read."""
    return {"email": principal["email"], "name": principal["name"], "email_verified": bool(principal["email_verified"])}


def principal_of(actor: Actor) -> dict[str, Any]:
    principal = actor.attributes.get("principal")
    if not isinstance(principal, dict):
        raise ProblemError(403, "Forbidden", "This endpoint is for accounts of the auth plugin.")
    return principal


def expires(ts: datetime) -> float:
    return ts.timestamp()


# -- service principals for background work -----------------------------------------------


async def service_actor(kernel: Kernel, name: str) -> Actor | None:
    """The department service principal ``auth.service_principals`` maps ``name`` to (None when it maps nothing).

    Resolved once per generation and name: a role or catalogue change applies from the next generation.
    """
    target = settings_of(kernel).service_principals.get(name)
    if target is None:
        return None
    state = state_of(kernel)
    cached = state.service_actors.get(name)
    if cached is not None and cached[0] == target and cached[1] == kernel.generation:
        return cached[2]  # type: ignore[no-any-return]
    from ._accounts import service_principal

    department, _, role = target.partition(":")
    user, _ = await service_principal(kernel, department, role)
    async with _db.system(kernel) as session:
        principal = await load_principal(kernel, session, user.id)
    if principal is None:
        return None
    actor = Actor(
        id=principal["user_id"],
        kind="service",
        tenant_id=principal["tenant_id"],
        permissions=frozenset(principal["permissions"]),
        attributes={"auth": "service", "service": name, "principal": principal},
    )
    state.service_actors[name] = (target, kernel.generation, actor)
    return actor
