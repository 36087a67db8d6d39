"""Google login endpoints: start (redirect to Google) and callback (code → tokens), linking by verified e-mail."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from botcriptofy import Kernel, ProblemError, kernel_of

from . import _db
from ._accounts import link_identity
from ._events import LoginSucceeded, UserSignedUp
from ._models import Identity, Tenant, User, new_id
from ._oidc import STATE_TTL, OidcClient, OidcError, new_login_state, not_configured, same_state
from ._oidc import Identity as OidcIdentity
from ._schemas import GoogleCallbackQuery, GoogleLoginOut, GoogleStartOut, GoogleStartQuery
from ._service import PLAN_FOR, REVIEW_FOR, Caller, open_session, record_login_ip
from ._state import CACHE_NAMESPACE, settings_of, state_of
from ._util import client_ip, normalise_email, now, user_agent

PROVIDER = "google"
COOKIE = "bcf_oidc_state"
COOKIE_PATH = "/v1/auth/google"


def client_for(kernel: Kernel) -> OidcClient:
    settings = settings_of(kernel)
    if not settings.google_client_id or not settings.google_client_secret:
        raise not_configured()
    state = state_of(kernel)
    current = state.oidc
    if current is None or not current.matches(settings.google_discovery_url, settings.google_client_id, settings.google_client_secret):
        if current is not None:
            task = _close_later(current)
            state.background.add(task)
            task.add_done_callback(state.background.discard)
        current = state.oidc = OidcClient(settings.google_discovery_url, settings.google_client_id, settings.google_client_secret)
    return current


def _close_later(client: OidcClient) -> Any:
    import asyncio

    async def close() -> None:
        await asyncio.sleep(30)  # requests of the previous settings may still use it
        await client.close()

    return asyncio.get_running_loop().create_task(close())


def redirect_uri(request: Request) -> str:
    configured = settings_of(kernel_of(request)).google_redirect_uri
    return configured or str(request.url_for("google_callback"))


async def google_start(request: Request, *, query: GoogleStartQuery) -> Response:
    """Start Google login: redirect to Google's consent page (or answer its URL with mode=json)."""
    kernel = kernel_of(request)
    client = client_for(kernel)
    login = new_login_state()
    try:
        url = await client.authorization_url(
            redirect_uri=redirect_uri(request), state=login["state"], nonce=login["nonce"], code_verifier=login["verifier"]
        )
    except OidcError as error:
        raise ProblemError(502, "Identity provider unavailable", f"Google login cannot start: {error}.") from None
    await kernel.cache().set(
        f"oidc:{login['state']}", {**login, "account_type": query.account_type}, ttl=STATE_TTL, namespace=CACHE_NAMESPACE
    )
    response: Response = (
        JSONResponse(GoogleStartOut(authorization_url=url).model_dump()) if query.mode == "json" else RedirectResponse(url, status_code=302)
    )
    response.set_cookie(
        COOKIE,
        login["state"],
        max_age=int(STATE_TTL),
        path=COOKIE_PATH,
        httponly=True,
        samesite="lax",
        secure=settings_of(kernel).oidc_cookie_secure,
    )
    return response


async def google_callback(request: Request, *, query: GoogleCallbackQuery) -> Response:
    """Finish Google login: exchange the code, validate the ID token, log in (linking or creating the account)."""
    kernel = kernel_of(request)
    settings = settings_of(kernel)
    client = client_for(kernel)
    if query.error:
        raise ProblemError(
            401,
            "Google login refused",
            f"Google answered '{query.error}'" + (f": {query.error_description}" if query.error_description else "") + ".",
        )
    if not query.code or not query.state:
        raise ProblemError(400, "Bad callback", "The callback needs 'code' and 'state' query parameters.")
    if not same_state(request.cookies.get(COOKIE), query.state):
        raise ProblemError(
            400,
            "Login state mismatch",
            "This browser did not start this login (state cookie missing or different); start again from /v1/auth/google/start.",
        )
    cache = kernel.cache()
    saved = await cache.get(f"oidc:{query.state}", namespace=CACHE_NAMESPACE)
    await cache.delete(f"oidc:{query.state}", namespace=CACHE_NAMESPACE)
    if not isinstance(saved, dict):
        raise ProblemError(400, "Login state expired", "This login attempt expired or was already used; start again.")
    try:
        identity = await client.exchange(
            code=query.code, redirect_uri=redirect_uri(request), code_verifier=saved["verifier"], nonce=saved["nonce"]
        )
    except OidcError as error:
        raise ProblemError(401, "Google login failed", f"{str(error)[:1].upper()}{str(error)[1:]}.") from None
    caller = Caller(ip=client_ip(request, settings.trusted_proxies), user_agent=user_agent(request))
    result = await login_with_identity(kernel, identity, account_type=saved.get("account_type", "trader"), caller=caller)
    if settings.oidc_success_redirect:
        fragment = urlencode(
            {
                "access_token": result.access_token,
                "refresh_token": result.refresh_token,
                "token_type": "bearer",
                "expires_in": result.expires_in,
            }
        )
        response: Response = RedirectResponse(f"{settings.oidc_success_redirect}#{fragment}", status_code=302)
    else:
        response = JSONResponse(result.model_dump(), headers={"Cache-Control": "no-store"})
    response.delete_cookie(COOKIE, path=COOKIE_PATH)
    return response


async def login_with_identity(kernel: Kernel, identity: OidcIdentity, *, account_type: str, caller: Caller) -> GoogleLoginOut:
    settings = settings_of(kernel)
    email: str | None = None
    if identity.email and identity.email_verified:
        try:
            email = normalise_email(identity.email)
        except ValueError:
            email = None
    created = linked = False
    try:
        async with _db.system(kernel, write=True) as session:
            user = await _find_user(session, identity, email)
            if user is None and email is not None:
                user = (await session.scalars(sa.select(User).where(User.email == email, User.kind == "user"))).first()
                if user is not None:
                    if not user.email_verified:
                        # Someone may have signed up with this address without owning it (account pre-hijacking):
                        # linking would hand the Google user an account its creator still controls.
                        raise ProblemError(
                            409,
                            "Account not verified",
                            "An account with this e-mail exists but its address was never verified, so it is not linked to this "
                            "Google account. Reset its password (POST /v1/auth/password/forgot; the link goes to this address, "
                            "ends every session and verifies the address), then log in with Google again.",
                            type="https://botcriptofy.dev/problems/email-not-verified",
                            reason="email_not_verified",
                        )
                    await link_identity(session, user=user, provider=PROVIDER, subject=identity.subject, email=email)
                    linked = True
            if user is None:
                if email is None:
                    raise ProblemError(
                        403,
                        "Verified e-mail required",
                        "Google did not vouch for an e-mail address of this account, so it can neither be linked nor used to create one.",
                    )
                if not settings.google_signup or not settings.allow_signup:
                    raise ProblemError(403, "No account", "No account uses this e-mail and sign-up through Google is off.")
                tenant = Tenant(
                    id=new_id(),
                    type=account_type,
                    name=identity.name or email.partition("@")[0],
                    plan=PLAN_FOR[account_type],
                    review=REVIEW_FOR.get(account_type),
                    created_at=now(),
                )
                session.add(tenant)
                await session.flush()
                user = User(
                    id=new_id(),
                    tenant_id=tenant.id,
                    kind="user",
                    email=email,
                    email_verified=True,
                    name=(identity.name or email.partition("@")[0])[:200],
                    password_hash=None,
                    created_at=now(),
                    updated_at=now(),
                )
                session.add(user)
                await session.flush()
                await link_identity(session, user=user, provider=PROVIDER, subject=identity.subject, email=email)
                await _db.publish(
                    kernel,
                    UserSignedUp(user_id=user.id, tenant_id=tenant.id, account_type=account_type, method=PROVIDER, ip=caller.ip),
                    session,
                    tenant_id=tenant.id,
                )
                created = True
            tenant_row = await session.get(Tenant, user.tenant_id)
            assert tenant_row is not None
            if user.status != "active":
                raise ProblemError(403, "Account disabled", "This account is disabled; contact support.")
            if tenant_row.type == "company" and (user.super_admin or user.totp_enabled or settings.staff_totp_required):
                raise ProblemError(
                    403,
                    "Use password and TOTP",
                    "Staff accounts with two-factor authentication log in with their password and TOTP code, not through Google.",
                )
            if user.locked_until is not None and user.locked_until > now():
                raise ProblemError(
                    423,
                    "Account locked",
                    f"This account is locked until {user.locked_until.isoformat(timespec='seconds')}.",
                    locked_until=user.locked_until.isoformat(),
                )
            tokens, sid = await open_session(kernel, session, user=user, method=PROVIDER, caller=caller, amr=["fed"])
            await _db.publish(
                kernel,
                LoginSucceeded(user_id=user.id, tenant_id=user.tenant_id, session_id=sid, method=PROVIDER, ip=caller.ip),
                session,
                tenant_id=user.tenant_id,
            )
    except IntegrityError:
        raise ProblemError(409, "Concurrent login", "Another login created this account at the same moment; try again.") from None
    await record_login_ip(kernel, user, caller, method=PROVIDER)
    return GoogleLoginOut(**tokens.model_dump(), user_id=user.id, created=created, linked=linked)


async def _find_user(session: Any, identity: OidcIdentity, email: str | None) -> User | None:
    link = (await session.scalars(sa.select(Identity).where(Identity.provider == PROVIDER, Identity.subject == identity.subject))).first()
    if link is None:
        return None
    found: User | None = await session.get(User, link.user_id)
    return found
