"""HTTP endpoints of the auth plugin (SPEC §6), declared with ``botcriptofy.Route``."""

from __future__ import annotations

import json
import re
from types import MappingProxyType
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from botcriptofy import Actor, ProblemError, Route, kernel_of, require

from . import _accounts, _flows, _rank, _service
from ._google import google_callback, google_start
from ._models import ApiKey, Tenant, User
from ._principals import principal_of
from ._schemas import (
    AcceptedOut,
    AccountTokenIn,
    ApiKeyCreatedOut,
    ApiKeyIn,
    ApiKeyOut,
    ApprovalOut,
    BlockIn,
    EmailChangeIn,
    EmailChangeOut,
    EmailChangeStatusOut,
    EmailVerifiedOut,
    GoogleCallbackQuery,
    GoogleStartQuery,
    InfluencerOut,
    LoginIn,
    MeOut,
    PasswordChangeIn,
    PasswordForgotIn,
    PasswordResetIn,
    PermissionOut,
    ProfileIn,
    RefreshIn,
    ReviewQuery,
    RevokedOut,
    ServiceKeyOut,
    ServicePrincipalIn,
    SessionOut,
    SignupIn,
    SignupOut,
    StaffIn,
    StaffOut,
    StaffRolesIn,
    TenantOut,
    TokenPair,
    TotpCodeIn,
    TotpEnrollOut,
    TotpStatusOut,
    UserOut,
    VerificationSentOut,
)
from ._state import settings_of, state_of
from ._util import client_ip, user_agent

STAFF_PERMISSION = "staff:manage"
NO_STORE = {"Cache-Control": "no-store"}


def _caller(request: Request) -> _service.Caller:
    settings = settings_of(kernel_of(request))
    return _service.Caller(ip=client_ip(request, settings.trusted_proxies), user_agent=user_agent(request))


def _json(model: Any, status: int = 200) -> Response:
    """Responses carrying secrets are never cached."""
    return Response(model.model_dump_json(), status, media_type="application/json", headers=NO_STORE)


def _user_out(user: User) -> UserOut:
    return UserOut(
        id=user.id,
        email=user.email,
        name=user.name,
        kind=user.kind,
        email_verified=user.email_verified,
        super_admin=user.super_admin,
        totp_enabled=user.totp_enabled,
        created_at=user.created_at,
    )


def _key_out(key: ApiKey) -> dict[str, Any]:
    return {
        "id": key.id,
        "name": key.name,
        "prefix": key.prefix,
        "scopes": list(key.scopes),
        "created_at": key.created_at,
        "expires_at": key.expires_at,
        "last_used_at": key.last_used_at,
        "revoked_at": key.revoked_at,
    }


_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def _id_param(request: Request, name: str, what: str) -> str:
    """A path id: anything that is not one of our ids cannot name a row, so it is a 404 before any query."""
    value = str(request.path_params.get(name, ""))
    if not _UUID.match(value):
        raise _accounts.not_found(what)
    return value


async def _principal(request: Request, permission: str | None = None) -> tuple[Actor, dict[str, Any]]:
    actor = await require(request, permission)
    return actor, principal_of(actor)


# -- public -------------------------------------------------------------------------------


async def jwks(request: Request) -> JSONResponse:
    """Public keys that verify access tokens (JWKS, RFC 7517)."""
    return JSONResponse(state_of(kernel_of(request)).keyring.jwks(), headers={"Cache-Control": "public, max-age=300"})


async def signup(request: Request, *, body: SignupIn) -> Response:
    """Create an account: a user and its own tenant on the Free plan (influencers: pending the marketing department's approval)."""
    result = await _service.signup(
        kernel_of(request),
        email=body.email,
        password=body.password,
        name=body.name,
        account_type=body.account_type,
        caller=_caller(request),
    )
    tenant: Tenant = result["tenant"]
    out = SignupOut(
        user=_user_out(result["user"]),
        tenant=TenantOut(id=tenant.id, type=tenant.type, name=tenant.name, plan=tenant.plan, review=tenant.review),
        tokens=result["tokens"],
    )
    return _json(out, 201)


async def login(request: Request, *, body: LoginIn) -> Response:
    """Log in with e-mail and password (and TOTP code for staff): an access token and a refresh token."""
    tokens = await _service.login(
        kernel_of(request), email=body.email, password=body.password, totp_code=body.totp_code, caller=_caller(request)
    )
    return _json(tokens)


async def refresh(request: Request, *, body: RefreshIn) -> Response:
    """Trade a refresh token for a new pair; a reused refresh token revokes its whole session (401)."""
    return _json(await _service.refresh(kernel_of(request), refresh_token=body.refresh_token, caller=_caller(request)))


# -- the caller ---------------------------------------------------------------------------


def _session_of(actor: Actor) -> str:
    sid = actor.attributes.get("session_id")
    if not isinstance(sid, str):
        raise ProblemError(400, "No session", "This credential is an API key, which has no session; revoke it at /v1/auth/api-keys.")
    return sid


async def logout(request: Request) -> Response:
    """Revoke the current session: its access and refresh tokens stop working at once."""
    actor, principal = await _principal(request)
    await _service.revoke_sessions(
        kernel_of(request),
        tenant_id=principal["tenant_id"],
        user_id=principal["user_id"],
        session_ids=[_session_of(actor)],
        reason="logout",
    )
    return Response(status_code=204)


async def logout_all(request: Request) -> RevokedOut:
    """Revoke every session of the caller, this one included."""
    actor, principal = await _principal(request)
    _session_of(actor)
    found = await _service.revoke_sessions(
        kernel_of(request), tenant_id=principal["tenant_id"], user_id=principal["user_id"], session_ids=None, reason="logout_all"
    )
    return RevokedOut(revoked=len(found))


async def me(request: Request) -> Response:
    """The caller: user, tenant, roles, permissions and plan."""
    actor, principal = await _principal(request)
    return await _me(kernel_of(request), actor, principal)


def _utc(iso: str) -> str:
    return iso[:-6] + "Z" if iso.endswith("+00:00") else iso


async def _me(kernel: Any, actor: Actor, principal: dict[str, Any]) -> Response:
    """The MeOut document, serialised directly: this is the hottest authenticated endpoint (tests validate it against MeOut)."""
    entitlements = None
    if principal["tenant_type"] != "company" and kernel.hook.entitlements_for.get_hookimpls():
        entitlements = await kernel.entitlements(principal["tenant_id"])
    auth = "api_key" if actor.attributes.get("auth") == "api_key" else "session"
    # The document depends only on the cached caller, the actor's permissions and the entitlements: while the
    # cache still holds the same caller and the plan the same entitlements object, the encoded body is reused.
    bodies = state_of(kernel).me_bodies
    remembered = bodies.get(id(principal))
    if (
        remembered is not None
        and remembered[0] is principal
        and remembered[1] is entitlements
        and remembered[2] == (auth, actor.permissions)
    ):
        return Response(remembered[3], media_type="application/json")
    if entitlements is not None:
        plan = {
            "name": entitlements.plan,
            "source": "billing",
            "features": sorted(entitlements.features),
            "limits": dict(entitlements.limits),
        }
    else:
        plan = {"name": principal["plan"], "source": "stored", "features": [], "limits": {}}
    body = {
        "user": {
            "id": principal["user_id"],
            "email": principal["email"],
            "name": principal["name"],
            "kind": principal["kind"],
            "email_verified": principal["email_verified"],
            "super_admin": principal["super_admin"],
            "totp_enabled": principal["totp_enabled"],
            "created_at": _utc(principal["created_at"]),
            "phone": _accounts.decrypt_field(kernel, principal, "phone"),
            "tax_id": _accounts.decrypt_field(kernel, principal, "tax_id"),
        },
        "tenant": {
            "id": principal["tenant_id"],
            "type": principal["tenant_type"],
            "name": principal["tenant_name"],
            "plan": principal["plan"],
            "review": principal.get("review"),
        },
        "roles": principal["roles"],
        "permissions": sorted(actor.permissions),
        "plan": plan,
        "auth": auth,
    }
    encoded = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
    if entitlements is None or type(entitlements.limits) is MappingProxyType:  # immutable inputs only
        if len(bodies) >= 10_000:
            bodies.clear()
        bodies[id(principal)] = (principal, entitlements, (auth, actor.permissions), encoded)
    return Response(encoded, media_type="application/json")


async def update_me(request: Request, *, body: ProfileIn) -> Response:
    """Change the caller's name, phone or tax id (phone and tax id are stored encrypted)."""
    kernel = kernel_of(request)
    actor, principal = await _principal(request, "account:update")
    await _accounts.update_profile(kernel, principal, body.model_dump(exclude_unset=True))
    fresh = await _accounts.reload_principal(kernel, principal["user_id"])
    return await _me(kernel, actor, fresh)


async def change_password(request: Request, *, body: PasswordChangeIn) -> RevokedOut:
    """Change the password; every other session is logged out."""
    actor, principal = await _principal(request, "account:update")
    count = await _service.change_password(
        kernel_of(request),
        tenant_id=principal["tenant_id"],
        user_id=principal["user_id"],
        current=body.current_password,
        new=body.new_password,
        keep_session=_session_of(actor),
    )
    return RevokedOut(revoked=count)


# -- account e-mails ----------------------------------------------------------------------

FORGOT_ANSWER = "If an account uses this address, a link to reset its password is on its way."


async def verify_email(request: Request, *, body: AccountTokenIn) -> EmailVerifiedOut:
    """Verify the account's address with the token of the link sent to it (single use)."""
    await _flows.verify_email(kernel_of(request), body.token)
    return EmailVerifiedOut()


async def resend_verification(request: Request) -> VerificationSentOut:
    """Send a new verification link to the caller's address (the earlier link stops working)."""
    _, principal = await _principal(request)
    expires_at = await _flows.resend_verification(kernel_of(request), principal)
    return VerificationSentOut(expires_at=expires_at)


async def forgot_password(request: Request, *, body: PasswordForgotIn) -> Response:
    """Ask for a password reset link: the same answer, as fast, whether or not an account uses the address."""
    kernel = kernel_of(request)
    caller = _caller(request)
    await _service.throttle_ip(kernel, "password-reset", caller)
    _flows.request_password_reset(kernel, body.email, caller.ip)
    return _json(AcceptedOut(detail=FORGOT_ANSWER), 202)


async def reset_password(request: Request, *, body: PasswordResetIn) -> RevokedOut:
    """Set a new password with a reset link; every session of the account is logged out."""
    count = await _flows.reset_password(kernel_of(request), body.token, body.new_password)
    return RevokedOut(revoked=count)


async def change_email(request: Request, *, body: EmailChangeIn) -> Response:
    """Start moving the account to a new address: the new address proves itself, the current (verified) one confirms."""
    actor, principal = await _principal(request, "account:update")
    credentials = {"password": body.password, **({"totp_code": body.totp_code} if body.totp_code else {})}
    result = await _flows.start_email_change(kernel_of(request), actor, principal, body.new_email, credentials)
    return _json(EmailChangeOut(**result), 202)


async def confirm_email_change(request: Request, *, body: AccountTokenIn) -> EmailChangeStatusOut:
    """Confirm an e-mail change with the token sent to the new or to the current address."""
    return EmailChangeStatusOut(**await _flows.confirm_email_change(kernel_of(request), body.token))


async def cancel_email_change(request: Request, *, body: AccountTokenIn) -> RevokedOut:
    """Refuse an e-mail change with the token sent to the current address: every session of the account ends."""
    return RevokedOut(revoked=await _flows.cancel_email_change(kernel_of(request), body.token))


# -- sessions -----------------------------------------------------------------------------


async def sessions(request: Request) -> list[SessionOut]:
    """The caller's active sessions."""
    actor, principal = await _principal(request, "sessions:own")
    current = actor.attributes.get("session_id")
    rows = await _service.list_sessions(kernel_of(request), tenant_id=principal["tenant_id"], user_id=principal["user_id"])
    return [
        SessionOut(
            id=r.id,
            method=r.method,
            created_at=r.created_at,
            last_used_at=r.last_used_at,
            expires_at=r.expires_at,
            ip=r.ip,
            user_agent=r.user_agent,
            current=r.id == current,
        )
        for r in rows
    ]


async def revoke_session(request: Request) -> Response:
    """Revoke one of the caller's sessions."""
    _, principal = await _principal(request, "sessions:own")
    sid = _id_param(request, "session_id", "active session")
    found = await _service.revoke_sessions(
        kernel_of(request), tenant_id=principal["tenant_id"], user_id=principal["user_id"], session_ids=[sid], reason="revoked"
    )
    if not found:
        raise _accounts.not_found("active session")
    return Response(status_code=204)


# -- API keys -----------------------------------------------------------------------------


async def create_api_key(request: Request, *, body: ApiKeyIn) -> Response:
    """Create a scoped, expiring API key; its secret is in this response only."""
    kernel = kernel_of(request)
    actor, principal = await _principal(request, "apikeys:create")
    parent = _accounts.minting_key(actor)
    await _accounts.ensure_api_keys_allowed(kernel, principal)
    key, secret = await _accounts.create_api_key(
        kernel, owner=actor, principal=principal, name=body.name, scopes=body.scopes, days=body.expires_in_days, parent_key_id=parent
    )
    return _json(ApiKeyCreatedOut(**_key_out(key), key=secret), 201)


async def list_api_keys(request: Request) -> list[ApiKeyOut]:
    """The caller's API keys (never their secrets)."""
    _, principal = await _principal(request, "apikeys:read")
    return [ApiKeyOut(**_key_out(key)) for key in await _accounts.list_api_keys(kernel_of(request), principal)]


async def revoke_api_key(request: Request) -> Response:
    """Revoke an API key at once."""
    _, principal = await _principal(request, "apikeys:revoke")
    await _accounts.revoke_api_key(kernel_of(request), principal, _id_param(request, "key_id", "API key"))
    return Response(status_code=204)


# -- TOTP ---------------------------------------------------------------------------------


async def totp_enroll(request: Request) -> Response:
    """Start TOTP enrolment: a secret and an otpauth:// URI for the authenticator app."""
    _, principal = await _principal(request, "account:update")
    secret, uri = await _accounts.totp_enroll(kernel_of(request), principal)
    return _json(TotpEnrollOut(secret=secret, otpauth_uri=uri))


async def totp_verify(request: Request, *, body: TotpCodeIn) -> TotpStatusOut:
    """Finish TOTP enrolment with a first code; logins then need a code."""
    _, principal = await _principal(request, "account:update")
    await _accounts.totp_verify(kernel_of(request), principal, body.code)
    return TotpStatusOut(totp_enabled=True)


async def totp_disable(request: Request, *, body: TotpCodeIn) -> TotpStatusOut:
    """Turn TOTP off with a current code (never for the super-admin)."""
    _, principal = await _principal(request, "account:update")
    await _accounts.totp_disable(kernel_of(request), principal, body.code)
    return TotpStatusOut(totp_enabled=False)


# -- staff administration -----------------------------------------------------------------


def _str_roles(roles: Any) -> dict[str, str]:
    return {str(department): str(role) for department, role in roles.items()}


def _company_of(principal: dict[str, Any]) -> str:
    if principal["tenant_type"] != "company":
        raise ProblemError(403, "Forbidden", "Only company staff manage staff.")
    return str(principal["tenant_id"])


async def create_staff(request: Request, *, body: StaffIn) -> StaffOut:
    """Add a staff member to the company, with a role per department."""
    actor, principal = await _principal(request, STAFF_PERMISSION)
    _company_of(principal)
    _rank.check_grant(actor, principal, _str_roles(body.roles))
    user = await _accounts.create_staff(
        kernel_of(request), email=body.email, name=body.name, password=body.password, roles=_str_roles(body.roles), by=actor.id
    )
    return StaffOut(
        id=user.id,
        email=user.email,
        name=user.name,
        kind=user.kind,
        super_admin=user.super_admin,
        totp_enabled=user.totp_enabled,
        status=user.status,
        roles=_str_roles(body.roles),
    )


async def list_staff(request: Request) -> list[StaffOut]:
    """The company's staff and service principals, with their roles."""
    _, principal = await _principal(request, STAFF_PERMISSION)
    rows = await _accounts.list_staff(kernel_of(request), _company_of(principal))
    return [
        StaffOut(
            id=u.id,
            email=u.email,
            name=u.name,
            kind=u.kind,
            super_admin=u.super_admin,
            totp_enabled=u.totp_enabled,
            status=u.status,
            roles=roles,
        )
        for u, roles in rows
    ]


async def set_staff_roles(request: Request, *, body: StaffRolesIn) -> Response:
    """Replace a staff member's department roles; effective on their next request (rank rules apply)."""
    actor, principal = await _principal(request, STAFF_PERMISSION)
    kernel = kernel_of(request)
    user_id = _id_param(request, "user_id", "staff member")
    target = await _rank.staff_target(kernel, user_id)
    if target is None:
        raise _accounts.not_found("staff member")
    _rank.check_rank(actor, principal, target)
    _rank.check_grant(actor, principal, _str_roles(body.roles))
    await _accounts.change_staff_roles(
        kernel, company_id=_company_of(principal), user_id=user_id, roles=_str_roles(body.roles), by=actor.id
    )
    return Response(status_code=204)


async def create_service_key(request: Request, *, body: ServicePrincipalIn) -> Response:
    """Mint an API key for a department's service principal (the agents), with that department role's permissions."""
    actor, principal = await _principal(request, STAFF_PERMISSION)
    _company_of(principal)
    _rank.check_grant(actor, principal, {body.department: body.role})
    key, secret, user = await _accounts.create_service_key(
        kernel_of(request),
        department=body.department,
        role=body.role,
        name=body.name,
        days=body.expires_in_days,
        parent_key_id=_accounts.minting_key(actor),
    )
    return _json(ServiceKeyOut(**_key_out(key), key=secret, principal_id=user.id, department=body.department, role=body.role), 201)


def _pending(approval: Any) -> Response:
    out = ApprovalOut(approval_id=approval.id, action=approval.action, status=approval.status, expires_at=approval.expires_at)
    return _json(out, 202)


async def block_user(request: Request, *, body: BlockIn) -> Response:
    """Block an account (security): it cannot log in, its sessions end and its API keys stop working.

    A staff account needs a rank at least the target's, and an approval (202 with the approval's id).
    """
    kernel = kernel_of(request)
    actor, principal = await _principal(request, "users:block")
    _company_of(principal)
    user_id = _id_param(request, "user_id", "user")
    target = await _rank.staff_target(kernel, user_id)
    if target is not None:
        _rank.check_rank(actor, principal, target)
        approval = await _rank.request_staff_action(
            kernel,
            action=_rank.BLOCK_STAFF,
            actor=actor,
            target=target,
            permission="users:block",
            summary=f"Block staff account {target['email']}" + (f": {body.reason}" if body.reason else ""),
            reason=body.reason,
        )
        return _pending(approval)
    await _accounts.set_blocked(kernel, user_id=user_id, blocked=True, reason=body.reason, by=actor.id)
    return Response(status_code=204)


async def unblock_user(request: Request) -> Response:
    """Lift a block (a staff account needs a rank at least the target's)."""
    kernel = kernel_of(request)
    actor, principal = await _principal(request, "users:block")
    _company_of(principal)
    user_id = _id_param(request, "user_id", "user")
    target = await _rank.staff_target(kernel, user_id)
    if target is not None:
        _rank.check_rank(actor, principal, target)
    await _accounts.set_blocked(kernel, user_id=user_id, blocked=False, reason=None, by=actor.id)
    return Response(status_code=204)


async def unlock_user(request: Request) -> Response:
    """Lift the brute-force guard on an account (a staff account needs a rank at least the target's)."""
    kernel = kernel_of(request)
    actor, principal = await _principal(request, "users:unlock")
    _company_of(principal)
    user_id = _id_param(request, "user_id", "user")
    target = await _rank.staff_target(kernel, user_id)
    if target is not None:
        _rank.check_rank(actor, principal, target)
    await _accounts.unlock(kernel, user_id=user_id)
    return Response(status_code=204)


async def revoke_user_sessions(request: Request) -> Response:
    """Log a user out everywhere (security); a staff account needs a rank at least the target's and an approval (202)."""
    kernel = kernel_of(request)
    actor, principal = await _principal(request, "sessions:revoke")
    _company_of(principal)
    user_id = _id_param(request, "user_id", "user")
    target = await _rank.staff_target(kernel, user_id)
    if target is not None:
        _rank.check_rank(actor, principal, target)
        approval = await _rank.request_staff_action(
            kernel,
            action=_rank.REVOKE_STAFF_SESSIONS,
            actor=actor,
            target=target,
            permission="sessions:revoke",
            summary=f"Log staff account {target['email']} out everywhere",
        )
        return _pending(approval)
    count = await _accounts.revoke_user_sessions(kernel, user_id=user_id)
    return _json(RevokedOut(revoked=count))


async def list_permissions(request: Request) -> list[PermissionOut]:
    """The permission catalogue: built-in, declared by every enabled plugin, and granted in settings."""
    from ._permissions import catalogue_of

    await require(request, "permissions:read")
    catalogue = await catalogue_of(kernel_of(request))
    return [PermissionOut(name=e.name, description=e.description, grants=list(e.grants), plugin=e.plugin) for e in catalogue.entries]


async def list_influencers(request: Request, *, query: ReviewQuery) -> list[InfluencerOut]:
    """Influencer sign-ups, newest first, optionally only those pending review (marketing)."""
    await require(request, "influencers:read")
    found = await _accounts.list_influencers(kernel_of(request), review=query.review)
    return [
        InfluencerOut(
            tenant=TenantOut(id=t.id, type=t.type, name=t.name, plan=t.plan, review=t.review), users=emails, created_at=t.created_at
        )
        for t, emails in found
    ]


async def approve_influencer(request: Request) -> TenantOut:
    """Approve an influencer sign-up (marketing): the tenant moves to the Internal plan."""
    actor = await require(request, "influencers:approve")
    tenant = await _accounts.approve_influencer(kernel_of(request), _id_param(request, "tenant_id", "influencer"), by=actor.id)
    return TenantOut(id=tenant.id, type=tenant.type, name=tenant.name, plan=tenant.plan, review=tenant.review)


def routes() -> list[Route]:
    auth, account, admin = ["auth"], ["account"], ["admin"]
    bad_credentials = {
        401: "Invalid credentials",
        423: "Account guarded after failures from many addresses",
        429: "Too many attempts from this address",
        503: "Too many password checks waiting (Retry-After)",
    }
    admin_users = [
        Route(
            "/v1/admin/users/{user_id}/block",
            block_user,
            methods=["POST"],
            body=BlockIn,
            permission="users:block",
            status_code=204,
            tags=admin,
            max_body=4 * 1024,
            responses={
                202: "A staff account: an approval was requested (rank rules apply)",
                404: "No such user",
                503: "No approvals provider is enabled",
            },
        ),
        Route(
            "/v1/admin/users/{user_id}/unblock",
            unblock_user,
            methods=["POST"],
            permission="users:block",
            status_code=204,
            tags=admin,
            responses={404: "No such user"},
        ),
        Route(
            "/v1/admin/users/{user_id}/unlock",
            unlock_user,
            methods=["POST"],
            permission="users:unlock",
            status_code=204,
            tags=admin,
            responses={404: "No such user"},
        ),
        Route(
            "/v1/admin/users/{user_id}/revoke-sessions",
            revoke_user_sessions,
            methods=["POST"],
            response=RevokedOut,
            permission="sessions:revoke",
            tags=admin,
            responses={
                202: "A staff account: an approval was requested (rank rules apply)",
                404: "No such user",
                503: "No approvals provider is enabled",
            },
        ),
    ]
    return [
        # GET /v1/me first: the router tries routes in order and this is the hottest one.
        Route("/v1/me", me, response=MeOut, authenticated=True, tags=account),
        Route("/.well-known/jwks.json", jwks, tags=auth, summary="Public keys that verify access tokens (JWKS)."),
        Route(
            "/v1/auth/signup",
            signup,
            methods=["POST"],
            body=SignupIn,
            response=SignupOut,
            status_code=201,
            tags=auth,
            max_body=16 * 1024,
            responses={
                409: "E-mail already registered",
                403: "Sign-up closed",
                429: "Too many attempts",
                503: "Too many password checks waiting (Retry-After)",
            },
        ),
        Route(
            "/v1/auth/login",
            login,
            methods=["POST"],
            body=LoginIn,
            response=TokenPair,
            tags=auth,
            max_body=16 * 1024,
            responses={**bad_credentials, 403: "Account disabled or TOTP enrolment required"},
        ),
        Route(
            "/v1/auth/refresh",
            refresh,
            methods=["POST"],
            body=RefreshIn,
            response=TokenPair,
            tags=auth,
            max_body=4 * 1024,
            responses={401: "Invalid, expired or reused refresh token"},
        ),
        Route(
            "/v1/auth/logout",
            logout,
            methods=["POST"],
            authenticated=True,
            status_code=204,
            tags=auth,
            responses={400: "The credential has no session"},
        ),
        Route(
            "/v1/auth/logout-all",
            logout_all,
            methods=["POST"],
            response=RevokedOut,
            authenticated=True,
            tags=auth,
            responses={400: "The credential has no session"},
        ),
        Route(
            "/v1/auth/password",
            change_password,
            methods=["POST"],
            body=PasswordChangeIn,
            response=RevokedOut,
            authenticated=True,
            tags=auth,
            max_body=16 * 1024,
        ),
        Route(
            "/v1/me",
            update_me,
            methods=["PATCH"],
            body=ProfileIn,
            response=MeOut,
            authenticated=True,
            tags=account,
            max_body=16 * 1024,
            name="update_me",
        ),
        Route(
            "/v1/auth/email/verify",
            verify_email,
            methods=["POST"],
            body=AccountTokenIn,
            response=EmailVerifiedOut,
            tags=auth,
            max_body=4 * 1024,
            responses={400: "Invalid, used, replaced or expired link"},
        ),
        Route(
            "/v1/auth/email/verify/resend",
            resend_verification,
            methods=["POST"],
            response=VerificationSentOut,
            authenticated=True,
            tags=auth,
            responses={409: "Already verified", 429: "A link went out moments ago (Retry-After)"},
        ),
        Route(
            "/v1/auth/password/forgot",
            forgot_password,
            methods=["POST"],
            body=PasswordForgotIn,
            response=AcceptedOut,
            status_code=202,
            tags=auth,
            max_body=4 * 1024,
            responses={429: "Too many attempts from this address"},
        ),
        Route(
            "/v1/auth/password/reset",
            reset_password,
            methods=["POST"],
            body=PasswordResetIn,
            response=RevokedOut,
            tags=auth,
            max_body=16 * 1024,
            responses={400: "Invalid, used, replaced or expired link", 503: "Too many password checks waiting (Retry-After)"},
        ),
        Route(
            "/v1/auth/email/change",
            change_email,
            methods=["POST"],
            body=EmailChangeIn,
            response=EmailChangeOut,
            status_code=202,
            authenticated=True,
            tags=auth,
            max_body=16 * 1024,
            responses={
                403: "Wrong password or TOTP code, or not a login session",
                409: "Another account uses the address",
                429: "A link went out moments ago (Retry-After)",
            },
        ),
        Route(
            "/v1/auth/email/change/confirm",
            confirm_email_change,
            methods=["POST"],
            body=AccountTokenIn,
            response=EmailChangeStatusOut,
            tags=auth,
            max_body=4 * 1024,
            responses={400: "Invalid, used, replaced or expired link", 409: "Another account took the address meanwhile"},
        ),
        Route(
            "/v1/auth/email/change/cancel",
            cancel_email_change,
            methods=["POST"],
            body=AccountTokenIn,
            response=RevokedOut,
            tags=auth,
            max_body=4 * 1024,
            responses={400: "Invalid, used, replaced or expired link"},
        ),
        Route("/v1/auth/sessions", sessions, response=list[SessionOut], authenticated=True, tags=auth),
        Route(
            "/v1/auth/sessions/{session_id}",
            revoke_session,
            methods=["DELETE"],
            authenticated=True,
            status_code=204,
            tags=auth,
            responses={404: "No such session"},
        ),
        Route(
            "/v1/auth/api-keys",
            create_api_key,
            methods=["POST"],
            body=ApiKeyIn,
            response=ApiKeyCreatedOut,
            status_code=201,
            authenticated=True,
            tags=auth,
            max_body=16 * 1024,
            responses={403: "Plan or scope does not allow it"},
        ),
        Route("/v1/auth/api-keys", list_api_keys, response=list[ApiKeyOut], authenticated=True, tags=auth, name="list_api_keys"),
        Route(
            "/v1/auth/api-keys/{key_id}",
            revoke_api_key,
            methods=["DELETE"],
            authenticated=True,
            status_code=204,
            tags=auth,
            responses={404: "No such API key"},
        ),
        Route(
            "/v1/auth/totp/enroll",
            totp_enroll,
            methods=["POST"],
            response=TotpEnrollOut,
            authenticated=True,
            tags=auth,
            responses={409: "TOTP already enabled"},
        ),
        Route(
            "/v1/auth/totp/verify",
            totp_verify,
            methods=["POST"],
            body=TotpCodeIn,
            response=TotpStatusOut,
            authenticated=True,
            tags=auth,
            max_body=1024,
            responses={409: "No enrolment in progress"},
        ),
        Route(
            "/v1/auth/totp/disable",
            totp_disable,
            methods=["POST"],
            body=TotpCodeIn,
            response=TotpStatusOut,
            authenticated=True,
            tags=auth,
            max_body=1024,
            responses={409: "TOTP not enabled"},
        ),
        Route(
            "/v1/auth/google/start",
            google_start,
            query=GoogleStartQuery,
            tags=auth,
            responses={302: "Redirect to Google", 404: "Google login not configured", 502: "Google unreachable"},
        ),
        Route(
            "/v1/auth/google/callback",
            google_callback,
            query=GoogleCallbackQuery,
            response=TokenPair,
            tags=auth,
            responses={
                400: "Bad or expired login state",
                401: "Google refused or the ID token is invalid",
                403: "No verified e-mail",
                404: "Google login not configured",
                502: "Google unreachable",
            },
        ),
        Route(
            "/v1/admin/staff",
            create_staff,
            methods=["POST"],
            body=StaffIn,
            response=StaffOut,
            status_code=201,
            permission=STAFF_PERMISSION,
            tags=admin,
            max_body=16 * 1024,
            responses={409: "E-mail already registered"},
        ),
        Route("/v1/admin/staff", list_staff, response=list[StaffOut], permission=STAFF_PERMISSION, tags=admin, name="list_staff"),
        Route(
            "/v1/admin/staff/{user_id}/roles",
            set_staff_roles,
            methods=["PUT"],
            body=StaffRolesIn,
            permission=STAFF_PERMISSION,
            status_code=204,
            tags=admin,
            max_body=4 * 1024,
            responses={404: "No such staff member"},
        ),
        Route(
            "/v1/admin/service-principals",
            create_service_key,
            methods=["POST"],
            body=ServicePrincipalIn,
            response=ServiceKeyOut,
            status_code=201,
            permission=STAFF_PERMISSION,
            tags=admin,
            max_body=4 * 1024,
        ),
        *admin_users,
        Route(
            "/v1/admin/influencers",
            list_influencers,
            query=ReviewQuery,
            response=list[InfluencerOut],
            permission="influencers:read",
            tags=admin,
        ),
        Route(
            "/v1/admin/influencers/{tenant_id}/approve",
            approve_influencer,
            methods=["POST"],
            response=TenantOut,
            permission="influencers:approve",
            tags=admin,
            responses={404: "No such influencer", 409: "Already approved"},
        ),
        Route("/v1/admin/permissions", list_permissions, response=list[PermissionOut], permission="permissions:read", tags=admin),
    ]
