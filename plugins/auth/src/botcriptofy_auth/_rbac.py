"""Departments, roles and the permissions they grant (RBAC).

A permission is ``namespace:action``. Company staff hold one role per department; the role's
grants are cumulative (a member has everything a viewer has, a manager everything a member has
plus ``<department>:*``). Customers (trader, influencer) get the permissions of their account type
over their own tenant. Plugins declare their permissions and default grants through the
``register_permissions`` hook; operators add grants with the ``auth.extra_grants`` setting. Both
merge on top of the built-in table below into one :class:`Catalogue`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

log = logging.getLogger("botcriptofy.auth")

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
# The permissions of installed plugins (users:*, billing:*, ...) are declared by those plugins.
_DEPARTMENT_GRANTS: dict[str, dict[str, tuple[str, ...]]] = {
    # agents:read: every department agent's decision records (what the CEO agent summarises), nothing else of those departments.
    "ceo": {"viewer": ("reports:read", "analytics:read", "agents:read"), "member": ("reports:act",)},
    "finance": {"viewer": ("analytics:read",)},
    "marketing": {"viewer": ("referrals:read", "analytics:read"), "member": ("campaigns:write",)},
    "sales": {"viewer": ("leads:read",), "member": ("leads:write",)},
    "security": {"viewer": ("audit:read",)},
    "support": {"viewer": ("tickets:read",), "member": ("tickets:write",)},
    "audit": {"viewer": ("audit:read",), "member": ("audit:verify",)},
    "documents": {"viewer": ("documents:read",), "member": ("documents:write",)},
    "configuration": {"viewer": ("configuration:read", "backups:read"), "member": ("backups:run",)},
    "subscriptions": {},
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


# -- the catalogue: built-in table + declared permissions + extra grants ------------------

_PERMISSION_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,39}:([a-z][a-z0-9_-]{0,39}|\*)$")


def is_holder(key: str) -> bool:
    """Whether ``key`` names who can hold a grant: an account type, ``company`` or ``<department>:<role>``."""
    if key in ("trader", "influencer", "company"):
        return True
    department, _, role = key.partition(":")
    return department in DEPARTMENTS and role in ROLES


@dataclass(frozen=True)
class CatalogueEntry:
    """One permission as listed by ``GET /v1/admin/permissions`` and ``botcriptofy permissions list``."""

    name: str
    description: str
    grants: tuple[str, ...]
    plugin: str


@dataclass(frozen=True)
class Catalogue:
    """Every known permission, and what each holder gets beyond the built-in table (declared defaults and extra grants)."""

    entries: tuple[CatalogueEntry, ...]
    grants: Mapping[str, tuple[str, ...]]


def builtin_entries() -> list[CatalogueEntry]:
    holders: dict[str, set[str]] = {}
    for department in DEPARTMENTS:
        for level, role in enumerate(ROLES):
            own = {f"{department}:read"} | set(_DEPARTMENT_GRANTS[department].get("viewer", ()))
            if level >= 1:
                own |= {f"{department}:act"} | set(_DEPARTMENT_GRANTS[department].get("member", ()))
            if level >= 2:
                own |= {f"{department}:*"} | set(_DEPARTMENT_GRANTS[department].get("manager", ()))
            for permission in own:
                holders.setdefault(permission, set()).add(f"{department}:{role}")
    for account_type, permissions in CUSTOMER_PERMISSIONS.items():
        for permission in permissions:
            holders.setdefault(permission, set()).add(account_type)
    for permission in STAFF_BASE_PERMISSIONS:
        holders.setdefault(permission, set()).add("company")
    return [CatalogueEntry(name, "built-in departmental permission", _lowest(grants), "auth") for name, grants in holders.items()]


def _lowest(grants: Iterable[str]) -> tuple[str, ...]:
    """Drop ``<department>:<role>`` grants implied by a lower role's grant of the same department."""
    kept = set(grants)
    for grant in list(kept):
        department, _, role = grant.partition(":")
        if role in ROLES:
            kept -= {f"{department}:{higher}" for higher in ROLES[ROLES.index(role) + 1 :]}
    return tuple(sorted(kept))


def build_catalogue(declared: Mapping[str, Iterable[Any]], extra: Mapping[str, Iterable[str]]) -> Catalogue:
    """Merge each plugin's declared permissions (``{plugin: [Permission, ...]}``) and the extra grants over the built-in table.

    A declaration with a malformed name or an unknown holder is left out and logged with the plugin's name.
    """
    entries = {entry.name: entry for entry in builtin_entries()}
    grants: dict[str, set[str]] = {key: set(values) for key, values in extra.items()}
    for plugin, permissions in sorted(declared.items()):
        for permission in permissions or ():
            name = getattr(permission, "name", None)
            if not isinstance(name, str) or not _PERMISSION_NAME.match(name):
                log.error(
                    "plugin '%s' declares a permission named %r, not 'namespace:action'; ignored", plugin, name, extra={"plugin": plugin}
                )
                continue
            unknown = sorted(holder for holder in permission.grants if not is_holder(holder))
            if unknown:
                log.error(
                    "plugin '%s' grants '%s' to unknown holder(s) %s; use 'trader', 'influencer', 'company' or '<department>:<role>'",
                    plugin,
                    name,
                    ", ".join(unknown),
                    extra={"plugin": plugin},
                )
            holders = sorted(holder for holder in permission.grants if is_holder(holder))
            for holder in holders:
                grants.setdefault(holder, set()).add(name)
            entries[name] = CatalogueEntry(name, permission.description, _lowest(holders), plugin)
    for holder, permissions in extra.items():
        for name in permissions:
            entry = entries.get(name)
            if entry is None:
                entries[name] = CatalogueEntry(name, "granted by auth.extra_grants", (holder,), "settings")
            elif holder not in entry.grants:
                entries[name] = CatalogueEntry(name, entry.description, _lowest((*entry.grants, holder)), entry.plugin)
    return Catalogue(
        entries=tuple(sorted(entries.values(), key=lambda entry: entry.name)),
        grants={holder: tuple(sorted(values)) for holder, values in sorted(grants.items())},
    )
