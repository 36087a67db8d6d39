"""Rank among staff: who may act on a staff account, and the staff actions that need an approval.

An action on a staff account (block, log out everywhere, unlock, change roles) needs, in every
department where the target holds a role, a role at least as high; roles granted or minted (new
staff, service-principal keys) follow the same rule. Only the super-admin acts on the super-admin.
Blocking a staff member and logging one out everywhere are destructive: they go through
``kernel.request_approval`` (the security department decides) and run once approved.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from botcriptofy import Actor, ApprovalAction, ApprovalRequest, Kernel, ProblemError

from . import _db
from ._models import StaffRole, Tenant, User
from ._rbac import ROLES

BLOCK_STAFF = "auth.block_staff"
REVOKE_STAFF_SESSIONS = "auth.revoke_staff_sessions"
APPROVAL_TTL = 24 * 3600.0


def rank_problem(reason: str) -> ProblemError:
    return ProblemError(403, "Insufficient rank", reason, type="https://botcriptofy.dev/problems/insufficient-rank")


def shortfall(actor_roles: dict[str, str], actor_super_admin: bool, target_roles: dict[str, str], target_super_admin: bool) -> str | None:
    """Why the actor may not act on (or grant) ``target_roles``; None when they may."""
    if actor_super_admin:
        return None
    if target_super_admin:
        return "Only the super-admin can act on the super-admin's account."
    for department, role in sorted(target_roles.items()):
        held = actor_roles.get(department)
        if held is None or ROLES.index(held) < ROLES.index(role):
            return (
                f"The target holds the {role} role in {department}; acting on it needs at least that role there "
                f"(you hold {held or 'none'})."
            )
    return None


def check_grant(actor: Actor, principal: dict[str, Any], roles: dict[str, str]) -> None:
    """Refuse granting (or minting keys with) roles above the actor's own."""
    reason = shortfall(principal.get("roles", {}), actor.super_admin, roles, False)
    if reason is not None:
        raise rank_problem(reason.replace("The target holds", "Granting").replace("acting on it", "granting it"))


async def staff_target(kernel: Kernel, user_id: str) -> dict[str, Any] | None:
    """The target's rank when it is a staff account or service principal (None for customers); 404 when unknown."""
    async with _db.system(kernel) as session:
        row = (
            await session.execute(sa.select(User, Tenant.type).join(Tenant, Tenant.id == User.tenant_id).where(User.id == user_id))
        ).first()
        if row is None:
            raise ProblemError(404, "Not Found", "No user with this id exists in your account.")
        user, tenant_type = row
        if tenant_type != "company":
            return None
        roles = {r.department: r.role for r in (await session.scalars(sa.select(StaffRole).where(StaffRole.user_id == user_id))).all()}
    return {"user_id": user.id, "email": user.email or user.name, "roles": roles, "super_admin": bool(user.super_admin)}


def check_rank(actor: Actor, principal: dict[str, Any], target: dict[str, Any]) -> None:
    reason = shortfall(principal.get("roles", {}), actor.super_admin, target["roles"], target["super_admin"])
    if reason is not None:
        raise rank_problem(reason)


async def _decider_may(kernel: Kernel, approval: ApprovalRequest, target: dict[str, Any] | None) -> str | None:
    """Rank applies to whoever approved as well; None when they may."""
    if target is None or approval.decided_by is None:
        return None
    async with _db.system(kernel) as session:
        decider = await session.get(User, approval.decided_by)
        if decider is None:
            return "the approver's account no longer exists"
        roles = {r.department: r.role for r in (await session.scalars(sa.select(StaffRole).where(StaffRole.user_id == decider.id))).all()}
    return shortfall(roles, bool(decider.super_admin), target["roles"], target["super_admin"])


def approval_actions(kernel: Kernel) -> list[ApprovalAction]:
    from ._accounts import revoke_user_sessions, set_blocked

    async def block(approval: ApprovalRequest) -> dict[str, Any]:
        current = kernel.current()
        user_id = str(approval.payload["user_id"])
        refused = await _decider_may(current, approval, await staff_target(current, user_id))
        if refused is not None:
            return {"done": False, "reason": refused}
        reason = approval.payload.get("reason")
        await set_blocked(
            current, user_id=user_id, blocked=True, reason=str(reason) if reason else None, by=approval.decided_by or approval.requester
        )
        return {"done": True, "blocked": user_id}

    async def revoke(approval: ApprovalRequest) -> dict[str, Any]:
        current = kernel.current()
        user_id = str(approval.payload["user_id"])
        refused = await _decider_may(current, approval, await staff_target(current, user_id))
        if refused is not None:
            return {"done": False, "reason": refused}
        return {"done": True, "revoked": await revoke_user_sessions(current, user_id=user_id)}

    return [
        ApprovalAction(BLOCK_STAFF, block, "Block a staff account: it cannot log in, its sessions and keys stop.", destructive=True),
        ApprovalAction(REVOKE_STAFF_SESSIONS, revoke, "Log a staff account out everywhere.", destructive=True),
    ]


async def request_staff_action(
    kernel: Kernel, *, action: str, actor: Actor, target: dict[str, Any], permission: str, summary: str, reason: str | None = None
) -> ApprovalRequest:
    """Ask the security department to approve a destructive action on a staff account (503 when no approvals provider is enabled)."""
    return await kernel.request_approval(
        action=action,
        summary=summary,
        department="security",
        permission=permission,
        requester=actor,
        expires_in=APPROVAL_TTL,
        payload={"user_id": target["user_id"], "reason": reason},
        destructive=True,
    )
