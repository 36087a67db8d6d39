"""The permission catalogue: every enabled plugin's declared permissions merged over the built-in table, per generation."""

from __future__ import annotations

from botcriptofy import Kernel, Permission

from ._rbac import Catalogue, build_catalogue
from ._state import PRINCIPALS_TAG, settings_of, state_of

# The permissions the auth plugin's own routes and commands check.
AUTH_PERMISSIONS = [
    Permission("staff:manage", "Add staff, change their roles, mint service-principal keys (rank rules apply).", frozenset()),
    Permission("users:read", "Read any account's profile and status.", frozenset({"security:viewer", "support:viewer"})),
    Permission("users:block", "Block or unblock an account (staff accounts need an approval).", frozenset({"security:member"})),
    Permission("users:unlock", "Lift the brute-force guard on an account.", frozenset({"security:member", "support:member"})),
    Permission("sessions:revoke", "Log an account out everywhere (staff accounts need an approval).", frozenset({"security:member"})),
    Permission("permissions:read", "List the permission catalogue.", frozenset({"configuration:viewer", "security:viewer"})),
    Permission("influencers:read", "List influencer sign-ups and their review status.", frozenset({"marketing:viewer"})),
    Permission("influencers:approve", "Approve an influencer sign-up (moves it to the Internal plan).", frozenset({"marketing:member"})),
    Permission(
        "apikeys:mint",
        "Carried by an API key as a scope: lets that key create API keys (revoked with it).",
        frozenset({"trader", "influencer", "company"}),
    ),
]


async def catalogue_of(kernel: Kernel) -> Catalogue:
    """Return the catalogue of ``kernel``'s generation, building it on first use.

    Built once per generation, so a plugin enabled or disabled live changes the grants on the next
    request; cached callers are invalidated when the grants changed.
    """
    state = state_of(kernel)
    found = state.catalogue
    if found is not None and kernel.generation <= state.catalogue_generation:
        return found  # an older generation still finishing its requests uses the newer catalogue
    declared = await kernel.broadcast("register_permissions", kernel=kernel)
    catalogue = build_catalogue(declared, settings_of(kernel).extra_grants)
    state.catalogue, state.catalogue_generation = catalogue, kernel.generation
    if found is not None and found.grants != catalogue.grants:
        await kernel.cache().invalidate_tags(PRINCIPALS_TAG)
    return catalogue


def current_grants(kernel: Kernel) -> dict[str, tuple[str, ...]]:
    """The grants of the last catalogue built (call :func:`catalogue_of` first in the same request)."""
    catalogue = state_of(kernel).catalogue
    return dict(catalogue.grants) if catalogue is not None else {k: tuple(v) for k, v in settings_of(kernel).extra_grants.items()}
