"""``kernel.audit``: recorders in isolation, and ``strict`` for work that must not go on unrecorded."""

from __future__ import annotations

import pytest

from botcriptofy import AuditRecord, hookimpl


class Recorder:
    def __init__(self, *, fail: bool = False) -> None:
        self.fail = fail
        self.kept: list[str] = []

    @hookimpl
    async def record_audit(self, kernel, record: AuditRecord) -> None:
        if self.fail:
            raise ConnectionError("audit database unreachable")
        self.kept.append(record.action)


async def test_a_failing_recorder_is_logged_and_with_strict_raised_after_the_others_ran(kernel_harness, caplog):
    failing, working = Recorder(fail=True), Recorder()
    harness = await kernel_harness(plugins={"failing": failing, "working": working})
    await harness.kernel.audit("thing.done", actor_id="user:ana")
    assert working.kept == ["thing.done"]
    assert "plugin 'failing', hook 'record_audit' failed" in caplog.text
    with pytest.raises(ConnectionError, match="unreachable"):
        await harness.kernel.audit("thing.approved", actor_id="user:ana", strict=True)
    assert working.kept == ["thing.done", "thing.approved"]
    failing.fail = False
    await harness.kernel.audit("thing.approved", actor_id="user:ana", strict=True)
    assert failing.kept == ["thing.approved"]
