"""``audit_verify_chains``: the hook the audit plugin declares so agents verify without importing it."""

from __future__ import annotations

import pytest

from botcriptofy import Actor, ProblemError

from .test_chain import TENANT, _fill, _tamper

VERIFIER = Actor(id="service:agent_audit", kind="service", permissions=frozenset({"audit:verify", "audit:read"}))
READER = Actor(id="user:reader", kind="user", tenant_id="company", permissions=frozenset({"audit:read"}))


async def test_the_hook_verifies_for_an_actor_holding_audit_verify_and_records_it(make_audit):
    harness = await make_audit()
    kernel = harness.kernel
    await _fill(kernel, 6)
    report = await kernel.hook.audit_verify_chains(kernel=kernel, actor=VERIFIER, chain=None)
    assert report["valid"] is True and report["entries"] == 6 and report["first_problem"] is None
    await _tamper(kernel, f"UPDATE audit_entries SET details = '{{\"n\":99}}' WHERE chain = '{TENANT}' AND seq = 4")
    broken = await kernel.hook.audit_verify_chains(kernel=kernel, actor=VERIFIER, chain=TENANT)
    assert broken["valid"] is False and (broken["first_problem"]["seq"], broken["first_problem"]["kind"]) == (4, "edited")
    report = await kernel.hook.audit_verify_chains(kernel=kernel, actor=VERIFIER, chain="platform")
    assert report["valid"] is True and report["entries"] == 2  # the two verifications above, recorded under the verifier
    trail = [e for e in (await _entries(kernel)) if e["action"] == "audit.verified"]
    assert [(e["actor_id"], e["outcome"]) for e in trail] == [(VERIFIER.id, "success"), (VERIFIER.id, "failure"), (VERIFIER.id, "success")]


async def test_the_hook_refuses_an_actor_without_audit_verify(make_audit):
    harness = await make_audit()
    with pytest.raises(ProblemError) as refused:
        await harness.kernel.hook.audit_verify_chains(kernel=harness.kernel, actor=READER, chain=None)
    assert refused.value.status == 403 and "audit:verify" in refused.value.detail


async def _entries(kernel) -> list[dict]:
    from botcriptofy_audit import _service

    page, _ = await _service.list_entries(kernel.database(), tenant_id=None, everything=True, limit=1000)
    return list(reversed(page))
