"""Departments, roles and the permissions they grant (RBAC).

A permission is ``namespace:action``. Company staff hold one role per department; the role's
grants are cumulative (a member has everything a viewer has, a manager everything a member has
plus ``<department>:*``). Customers (trader, influencer) get the permissions of their account type
over their own tenant. Operators add grants with the ``auth.extra_grants`` setting.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Literal

DEPARTMENTS: dict[str, str] = {
    "ceo": "CEO",
    "finance": "Financeiro",
    "marketing": "Marketing",
    "sales": "Vendas",
    "security": "Segurança",
    "support": "SAC",
    "audit": "Auditoria",
    "documents": "Documentos",
    "configuration": "Configurações",
    "subscriptions": "Assinaturas",
}

Department = Literal["ceo", "finance", "marketing", "sales", "security", "support", "audit", "documents", "configuration", "subscriptions"]
Role = Literal["manager", "member", "viewer"]
AccountType = Literal["trader", "influencer"]
TenantType = Literal["company", "trader", "influencer"]

ROLES: tuple[str, ...] = ("viewer", "member", "manager")

# What each level adds inside its department, beyond ``<dept>:read`` (viewer), ``<dept>:act``
# (member) and ``<dept>:*`` (manager). Cross-namespace grants name the plugin's own permissions.
_DEPARTMENT_GRANTS: dict[str, dict[str, tuple[str, ...]]] = {
    "ceo": {"viewer": ("reports:read", "analytics:read"), "member": ("reports:act",)},
    "finance": {"viewer": ("billing:read", "analytics:read"), "member": ("billing:refund", "billing:invoice")},
    "marketing": {"viewer": ("referrals:read", "analytics:read"), "member": ("campaigns:write",)},
    "sales": {"viewer": ("leads:read",), "member": ("leads:write",)},
    "security": {"viewer": ("audit:read", "users:read"), "member": ("users:block", "sessions:revoke")},
    "support": {"viewer": ("tickets:read", "users:read"), "member": ("tickets:write",)},
    "audit": {"viewer": ("audit:read",), "member": ("audit:verify",)},
    "documents": {"viewer": ("documents:read",), "member": ("documents:write",)},
    "configuration": {"viewer": ("configuration:read", "backups:read"), "member": ("backups:run",)},
    "subscriptions": {"viewer": ("billing:read", "usage:read"), "member": ("subscriptions:manage",)},
}

# Customers act on their own tenant only; these namespaces never name a department.
CUSTOMER_PERMISSIONS: dict[str, tuple[str, ...]] = {
    "trader": (
        "account:*",
        "apikeys:*",
        "sessions:own",
        "trading:*",
        "bots:*",
        "strategies:*",
        "exchanges:*",
        "orders:*",
        "subscription:*",
        "privacy:*",
    ),
    "influencer": (
        "account:*",
        "apikeys:*",
        "sessions:own",
        "trading:*",
        "bots:*",
        "strategies:*",
        "exchanges:*",
        "orders:*",
        "referrals:own",
        "content:*",
        "privacy:*",
    ),
}
STAFF_BASE_PERMISSIONS: tuple[str, ...] = ("account:*", "apikeys:*", "sessions:own", "privacy:*")


def role_permissions(department: str, role: str, extra: Mapping[str, Iterable[str]] | None = None) -> frozenset[str]:
    """Return what ``role`` in ``department`` grants."""
    if department not in DEPARTMENTS:
        raise ValueError(f"unknown department '{department}'; use one of {', '.join(DEPARTMENTS)}")
    if role not in ROLES:
        raise ValueError(f"unknown role '{role}'; use one of {', '.join(ROLES)}")
    level = ROLES.index(role)
    grants: set[str] = {f"{department}:read"}
    table = _DEPARTMENT_GRANTS.get(department, {})
    grants.update(table.get("viewer", ()))
    if level >= 1:
        grants.add(f"{department}:act")
        grants.update(table.get("member", ()))
    if level >= 2:
        grants.add(f"{department}:*")
        grants.update(table.get("manager", ()))
    extra = extra or {}
    for lower in ROLES[: level + 1]:
        grants.update(extra.get(f"{department}:{lower}", ()))
    return frozenset(grants)


def staff_permissions(roles: Mapping[str, str], extra: Mapping[str, Iterable[str]] | None = None) -> frozenset[str]:
    """Return the union of every department role's grants, plus what every staff member may do on their own account."""
    granted: set[str] = set(STAFF_BASE_PERMISSIONS)
    granted.update((extra or {}).get("company", ()))
    for department, role in roles.items():
        granted |= role_permissions(department, role, extra)
    return frozenset(granted)


def customer_permissions(account_type: str, extra: Mapping[str, Iterable[str]] | None = None) -> frozenset[str]:
    base = set(CUSTOMER_PERMISSIONS.get(account_type, ()))
    base.update((extra or {}).get(account_type, ()))
    return frozenset(base)


def validate_extra_grants(extra: Mapping[str, Iterable[str]]) -> None:
    """Raise ``ValueError`` naming the first bad key of the ``extra_grants`` setting."""
    for key, permissions in extra.items():
        if key not in ("trader", "influencer", "company"):
            department, _, role = key.partition(":")
            if department not in DEPARTMENTS or role not in ROLES:
                raise ValueError(
                    f"'{key}' is neither 'trader', 'influencer', 'company' nor '<department>:<role>' "
                    f"(departments: {', '.join(DEPARTMENTS)}; roles: {', '.join(ROLES)})"
                )
        for permission in permissions:
            if permission != "*" and (":" not in permission or permission.startswith(":")):
                raise ValueError(f"'{permission}' under '{key}' is not a permission of the form 'namespace:action'")
            if permission == "*":
                raise ValueError(f"'*' under '{key}' would grant everything; make the account a super-admin instead")
