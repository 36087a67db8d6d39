"""Hooks the audit plugin declares (through ``register_hookspecs``) for other plugins to call.

Call them through ``kernel.hook.<name>(...)`` when the audit plugin is enabled; a plugin that only
calls (never implements) them needs no marker and still loads without this one.
"""

from __future__ import annotations

from typing import Any

from botcriptofy import hookspec


@hookspec(firstresult=True)
def audit_verify_chains(kernel: Any, actor: Any, chain: str | None) -> dict[str, Any] | None:
    """Verify the audit chains (every one, or ``chain``) for ``actor``, who must hold ``audit:verify``.

    Stops at first non-None result. The audit plugin answers (a coroutine: await it) with
    ``{"valid", "entries", "chains": [...], "first_problem"}`` and records ``audit.verified``
    under ``actor``; an actor without ``audit:verify`` gets a 403 :class:`botcriptofy.ProblemError`.
    The audit department's agent calls it on its schedule.

    :return: the verification report, or None when no plugin keeps an audit trail.
    """
