"""Notification addresses resolved to people: ``user:<id>``, ``department:<name>[:<min role>]``, ``tenant:<id>``,
and ``account-mail:<token id>`` (the address an account link was sent to, see ``_flows``).

Only active accounts resolve; a disabled or deleted account is nobody, so every channel drops it at once.
Each recipient carries an :class:`Actor` with the person's current permissions, which channels check
before running a command or taking an approval decision.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from botcriptofy import Actor, Kernel, Recipient

from . import _db
from ._flows import ADDRESS_KIND, recipient_of
from ._models import StaffRole, Tenant, User
from ._principals import load_principal
from ._rbac import DEPARTMENTS, ROLES


def _recipient(principal: dict[str, Any]) -> Recipient:
    actor = Actor(
        id=principal["user_id"],
        kind="service" if principal["kind"] == "service" else "user",
        tenant_id=principal["tenant_id"],
        permissions=frozenset(principal["permissions"]),
        super_admin=principal["super_admin"],
        attributes={"auth": "recipient", "principal": {k: principal[k] for k in ("user_id", "tenant_id", "tenant_type", "roles", "name")}},
    )
    return Recipient(
        user_id=principal["user_id"],
        tenant_id=principal["tenant_id"],
        name=principal["name"],
        email=principal["email"],
        email_verified=bool(principal["email_verified"]),
        roles=dict(principal["roles"]),
        actor=actor,
    )


async def resolve(kernel: Kernel, address: str) -> list[Recipient] | None:
    """Return the active people behind ``address``; None for an address kind this plugin does not know."""
    kind, _, rest = address.partition(":")
    if kind == ADDRESS_KIND and rest:
        return await recipient_of(kernel, rest)
    if kind not in ("user", "department", "tenant") or not rest:
        return None
    async with _db.system(kernel) as session:
        if kind == "user":
            user_ids = [rest]
        elif kind == "department":
            department, _, minimum = rest.partition(":")
            if department not in DEPARTMENTS or (minimum and minimum not in ROLES):
                return []
            roles = ROLES[ROLES.index(minimum or "viewer") :]
            query = (
                sa.select(StaffRole.user_id)
                .join(Tenant, Tenant.id == StaffRole.tenant_id)
                .where(StaffRole.department == department, StaffRole.role.in_(roles), Tenant.type == "company")
                .order_by(StaffRole.created_at, StaffRole.user_id)
            )
            user_ids = list((await session.scalars(query)).all())
        else:
            query = (
                sa.select(User.id)
                .where(User.tenant_id == rest, User.kind == "user", User.status == "active")
                .order_by(User.super_admin.desc(), User.created_at, User.id)
                .limit(1)
            )
            user_ids = list((await session.scalars(query)).all())
        found = []
        for user_id in user_ids:
            principal = await load_principal(kernel, session, user_id)
            if principal is not None and principal["status"] == "active" and principal["kind"] == "user":
                found.append(_recipient(principal))
    return found
