"""``botcriptofy users ...``: bootstrap the company owner, manage staff, mint service principal credentials."""

from __future__ import annotations

import sys
from typing import Any

import click
import sqlalchemy as sa

from botcriptofy import Kernel, ProblemError, pass_kernel

from . import _db, _totp
from ._rbac import DEPARTMENTS, ROLES
from ._util import normalise_email


def _fail(error: ProblemError) -> click.ClickException:
    details = "; ".join(f"{e.get('field')}: {e.get('message')}" for e in error.errors or ())
    return click.ClickException(f"{error.detail}" + (f" ({details})" if details and details not in (error.detail or "") else ""))


def _email(value: str) -> str:
    try:
        return normalise_email(value)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--email") from None


def _roles(pairs: tuple[str, ...]) -> dict[str, str]:
    roles: dict[str, str] = {}
    for pair in pairs:
        department, sep, role = pair.partition("=")
        if not sep or department not in DEPARTMENTS or role not in ROLES:
            raise click.BadParameter(
                f"'{pair}' is not DEPARTMENT=ROLE (departments: {', '.join(DEPARTMENTS)}; roles: {', '.join(ROLES)})", param_hint="--role"
            )
        roles[department] = role
    return roles


def _password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    value: str = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    return value


@click.group()
def users() -> None:
    """Company staff and service principals (the auth plugin)."""


async def create_admin(kernel: Kernel, *, email: str, name: str, password: str, another: bool = False) -> dict[str, Any]:
    """Create the company tenant (if needed) and a super-admin with TOTP already enrolled; return the TOTP secret and URI."""
    from ._accounts import create_staff
    from ._models import Tenant, User
    from ._state import settings_of

    async with _db.system(kernel) as session:
        existing = (
            (
                await session.execute(
                    sa.select(User.email)
                    .join(Tenant, Tenant.id == User.tenant_id)
                    .where(Tenant.type == "company", User.super_admin.is_(True))
                )
            )
            .scalars()
            .first()
        )
    if existing is not None and not another:
        raise click.ClickException(f"a super-admin already exists ({existing}); pass --another to add one more")
    secret = _totp.new_secret()
    user = await create_staff(
        kernel, email=email, name=name, password=password, roles={d: "manager" for d in DEPARTMENTS}, super_admin=True, totp_secret=secret
    )
    uri = _totp.provisioning_uri(secret, account=email, issuer=settings_of(kernel).totp_issuer)
    return {"user_id": user.id, "tenant_id": user.tenant_id, "totp_secret": secret, "otpauth_uri": uri}


@users.command("create-admin")
@click.option("--email", required=True, help="The owner's e-mail (their login).")
@click.option("--name", required=True, help="The owner's name.")
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of standard input instead of prompting.")
@click.option("--another", is_flag=True, help="Add a super-admin even though one exists.")
@pass_kernel
async def create_admin_command(kernel: Kernel, email: str, name: str, password_stdin: bool, another: bool) -> None:
    """Bootstrap the company owner: a super-admin with every department as manager and TOTP enrolled."""
    address = _email(email)
    password = _password(password_stdin)
    try:
        made = await create_admin(kernel, email=address, name=name, password=password, another=another)
    except ProblemError as error:
        raise _fail(error) from None
    click.echo(f"super-admin {address} created (user {made['user_id']}, company tenant {made['tenant_id']})")
    click.echo("Two-factor authentication is required for this account. Add it to an authenticator app now;")
    click.echo("this secret is shown only once:")
    click.echo(f"  secret: {made['totp_secret']}")
    click.echo(f"  URI:    {made['otpauth_uri']}")


@users.command("add-staff")
@click.option("--email", required=True)
@click.option("--name", required=True)
@click.option("--role", "roles", multiple=True, metavar="DEPARTMENT=ROLE", help="Repeat for each department, e.g. --role finance=member.")
@click.option("--password-stdin", is_flag=True)
@pass_kernel
async def add_staff_command(kernel: Kernel, email: str, name: str, roles: tuple[str, ...], password_stdin: bool) -> None:
    """Add a staff member to the company."""
    from ._accounts import create_staff

    address, parsed = _email(email), _roles(roles)
    try:
        user = await create_staff(kernel, email=address, name=name, password=_password(password_stdin), roles=parsed, by="cli")
    except ProblemError as error:
        raise _fail(error) from None
    click.echo(f"staff member {address} created (user {user.id}) with roles: {', '.join(f'{d}={r}' for d, r in parsed.items()) or 'none'}")


async def _staff_user(kernel: Kernel, email: str) -> Any:
    from ._models import Tenant, User

    async with _db.system(kernel) as session:
        row = (
            (
                await session.execute(
                    sa.select(User).join(Tenant, Tenant.id == User.tenant_id).where(User.email == email, Tenant.type == "company")
                )
            )
            .scalars()
            .first()
        )
    if row is None:
        raise click.ClickException(f"no staff member has the e-mail {email}")
    return row


@users.command("set-roles")
@click.option("--email", required=True)
@click.option("--role", "roles", multiple=True, metavar="DEPARTMENT=ROLE", help="The complete new set; none removes every role.")
@pass_kernel
async def set_roles_command(kernel: Kernel, email: str, roles: tuple[str, ...]) -> None:
    """Replace a staff member's department roles."""
    from ._accounts import change_staff_roles

    user = await _staff_user(kernel, _email(email))
    parsed = _roles(roles)
    await change_staff_roles(kernel, company_id=user.tenant_id, user_id=user.id, roles=parsed, by="cli")
    click.echo(f"{email}: {', '.join(f'{d}={r}' for d, r in parsed.items()) or 'no roles'}")


async def reset_totp(kernel: Kernel, email: str) -> tuple[str, str]:
    from ._models import User
    from ._principals import invalidate_user
    from ._state import settings_of, state_of
    from ._totp import totp_context

    user = await _staff_user(kernel, email)
    secret = _totp.new_secret()
    async with _db.system(kernel) as session:
        await session.execute(
            sa.update(User)
            .where(User.id == user.id)
            .values(
                totp_secret=state_of(kernel).cipher.encrypt(secret, context=totp_context(user.id)), totp_enabled=True, totp_last_step=None
            )
        )
    await invalidate_user(kernel, user.id)
    return secret, _totp.provisioning_uri(secret, account=email, issuer=settings_of(kernel).totp_issuer)


@users.command("reset-totp")
@click.option("--email", required=True)
@pass_kernel
async def reset_totp_command(kernel: Kernel, email: str) -> None:
    """Give a staff member a new TOTP secret (a lost device); it is enabled at once and shown only this once."""
    secret, uri = await reset_totp(kernel, _email(email))
    click.echo(f"new TOTP secret for {email} (shown once):\n  secret: {secret}\n  URI:    {uri}")


@users.command("unlock")
@click.option("--email", required=True)
@pass_kernel
async def unlock_command(kernel: Kernel, email: str) -> None:
    """Lift a brute-force lock on an account."""
    from ._models import User

    address = _email(email)
    async with _db.system(kernel) as session:
        result = await session.execute(
            sa.update(User).where(User.email == address).values(locked_until=None, failed_logins=0, failed_window_start=None)
        )
    if result.rowcount == 0:
        raise click.ClickException(f"no account has the e-mail {address}")
    click.echo(f"{address} unlocked")


@users.command("verify-email")
@click.option("--email", required=True)
@pass_kernel
async def verify_email_command(kernel: Kernel, email: str) -> None:
    """Mark an account's address verified (support checked the person's identity another way); audited."""
    from ._accounts import mark_email_verified

    address = _email(email)
    if not await mark_email_verified(kernel, email=address, by="operator:cli"):
        raise click.ClickException(f"no account has the e-mail {address}")
    click.echo(f"{address} verified")


@users.command("service-key")
@click.argument("department", type=click.Choice(list(DEPARTMENTS)))
@click.option("--role", type=click.Choice(list(ROLES)), default="member", show_default=True)
@click.option("--days", type=click.IntRange(1, 3650), default=None, help="Lifetime (default auth.apikey_default_days).")
@click.option("--name", default=None)
@pass_kernel
async def service_key_command(kernel: Kernel, department: str, role: str, days: int | None, name: str | None) -> None:
    """Mint an API key for DEPARTMENT's service principal (its agent), with that role's permissions only."""
    from ._accounts import create_service_key

    key, secret, user = await create_service_key(kernel, department=department, role=role, name=name, days=days)
    click.echo(f"service principal {user.name} ({user.id}); key {key.id} expires {key.expires_at.isoformat(timespec='seconds')}")
    click.echo(f"scopes: {', '.join(key.scopes)}")
    click.echo(f"X-API-Key (shown once): {secret}")


async def service_token(kernel: Kernel, department: str, role: str, ttl: int) -> tuple[str, str]:
    """A short-lived access token for a department's service principal, in a session of its own (revocable)."""
    from datetime import timedelta

    from ._accounts import service_principal
    from ._models import Session
    from ._principals import mint_access_token
    from ._state import settings_of, state_of
    from ._util import now

    user, _ = await service_principal(kernel, department, role)
    moment = now()
    session_row = Session(
        tenant_id=user.tenant_id,
        user_id=user.id,
        method="service",
        amr="svc",
        created_at=moment,
        last_used_at=moment,
        expires_at=moment + timedelta(seconds=ttl),
    )
    async with _db.system(kernel) as session:
        session.add(session_row)
        await session.flush()
        sid = session_row.id
    token, _ = mint_access_token(
        state_of(kernel),
        settings_of(kernel),
        user_id=user.id,
        tenant_id=user.tenant_id,
        session_id=sid,
        kind="service",
        amr=["svc"],
        ttl=ttl,
    )
    return token, sid


@users.command("service-token")
@click.argument("department", type=click.Choice(list(DEPARTMENTS)))
@click.option("--role", type=click.Choice(list(ROLES)), default="member", show_default=True)
@click.option("--ttl", type=click.IntRange(30, 86_400), default=900, show_default=True, help="Seconds the token lives.")
@pass_kernel
async def service_token_command(kernel: Kernel, department: str, role: str, ttl: int) -> None:
    """Mint a short-lived bearer token for DEPARTMENT's service principal."""
    token, sid = await service_token(kernel, department, role, ttl)
    click.echo(f"session {sid}, {ttl} s")
    click.echo(token)


@users.command("rotate-field-keys")
@pass_kernel
async def rotate_command(kernel: Kernel) -> None:
    """Re-encrypt personal fields (phone, tax id, TOTP secrets) under the first key of auth.field_encryption_keys."""
    from ._accounts import rotate_field_keys

    count = await rotate_field_keys(kernel)
    click.echo(f"re-encrypted {count} value(s)")


@click.group()
def permissions() -> None:
    """The permission catalogue (built-in, declared by plugins, granted in settings)."""


@permissions.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@pass_kernel
async def list_permissions_command(kernel: Kernel, as_json: bool) -> None:
    """List every permission with its default holders and the plugin that declares it."""
    import json

    from ._permissions import catalogue_of

    catalogue = await catalogue_of(kernel)
    if as_json:
        click.echo(
            json.dumps(
                [{"name": e.name, "description": e.description, "grants": list(e.grants), "plugin": e.plugin} for e in catalogue.entries],
                indent=2,
            )
        )
        return
    width = max((len(e.name) for e in catalogue.entries), default=10)
    for entry in catalogue.entries:
        click.echo(f"{entry.name:<{width}}  {entry.plugin:<12}  {', '.join(entry.grants) or '-':<40}  {entry.description}")


@click.group()
def secrets() -> None:
    """The secret box (auth.field_encryption_keys): rotate its key and re-encrypt every plugin's sealed values."""


@secrets.command("rotate")
@click.option("--key-id", default=None, help="Id of the new key (default: k<UTC timestamp>).")
@pass_kernel
def rotate_secrets_command(kernel: Kernel, key_id: str | None) -> None:
    """Put a new key first in auth.field_encryption_keys (in settings/.secrets.toml), keeping the old ones to decrypt."""
    import os
    import time

    import tomlkit

    from ._fields import new_key_entry
    from ._settings import AuthSettings
    from ._state import settings_of, state_of

    current = list(settings_of(kernel).field_encryption_keys) or [(kernel.state_dir / "auth" / "field-encryption-key").read_text().strip()]
    key_id = key_id or time.strftime("k%Y%m%d%H%M%S", time.gmtime())
    if key_id in state_of(kernel).cipher.key_ids:
        raise click.BadParameter(f"key id '{key_id}' is already configured", param_hint="--key-id")
    entries = [new_key_entry(key_id), *current]
    AuthSettings(field_encryption_keys=entries)  # refuse what the plugin would refuse
    path = kernel.config.raw.directory / ".secrets.toml"
    document = tomlkit.parse(path.read_text(encoding="utf-8")) if path.exists() else tomlkit.document()
    default = document.setdefault("default", tomlkit.table())
    section = default.setdefault("auth", tomlkit.table())
    section["field_encryption_keys"] = entries
    fd = os.open(path.with_suffix(".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(tomlkit.dumps(document))
    os.replace(path.with_suffix(".tmp"), path)
    click.echo(f"new key '{key_id}' now encrypts; {len(current)} older key(s) still decrypt ({path})")
    if os.environ.get("BOTCRIPTOFY_AUTH__FIELD_ENCRYPTION_KEYS"):
        click.echo("warning: BOTCRIPTOFY_AUTH__FIELD_ENCRYPTION_KEYS is set and overrides the file: put the new list there instead")
    click.echo("next: once the workers run with it, `botcriptofy secrets reencrypt`, then remove the old keys")


@secrets.command("reencrypt")
@pass_kernel
async def reencrypt_secrets_command(kernel: Kernel) -> None:
    """Re-encrypt every plugin's sealed values under the current key (after `secrets rotate`)."""
    outcome = await kernel.reencrypt_secrets()
    failed = {name: result for name, result in outcome.items() if isinstance(result, str)}
    for name, result in sorted(outcome.items()):
        click.echo(f"{name}: {result if isinstance(result, str) else f're-encrypted {result} value(s)'}")
    if failed:
        raise click.ClickException(f"re-encryption failed for: {', '.join(sorted(failed))}; the old keys must stay configured")
    click.echo(f"every sealed value is under key '{kernel.secret_box().key_id}'; the older keys can be removed")
