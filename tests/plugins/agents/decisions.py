"""What the agents' tests read back: an agent's decision records, once it has settled."""

from __future__ import annotations

from typing import Any

from botcriptofy.testing import wait_until
from botcriptofy_agents import Agent, read_decisions, runner_of


async def decisions_of(agent: Agent, kernel: Any, **filters: Any) -> list[dict[str, Any]]:
    """The agent's decision records, oldest first, read as its own service principal."""
    principal = await kernel.service_actor(agent.name)
    return list(reversed(await read_decisions(kernel, principal, department=agent.department, **filters)))


async def settle(agent: Agent, kernel: Any, count: int) -> list[dict[str, Any]]:
    """Wait until ``count`` decisions are recorded and the agent has nothing queued; return its records."""

    async def enough() -> bool:
        return len(await decisions_of(agent, kernel)) >= count

    await wait_until(enough, timeout=15)
    runner = runner_of(kernel, agent)
    assert runner is not None
    await runner.idle()
    return await decisions_of(agent, kernel)


async def approval_settled(agent: Agent, harness: Any, row: dict[str, Any]) -> dict[str, Any]:
    """Wait for the approval workflow of decision ``row`` to end; return the decision's record as it ended."""
    await harness.kernel.workflows().wait(f"approval.{row['approval_id']}")

    async def done() -> bool:
        return any(r["id"] == row["id"] and r["outcome"] != "awaiting_approval" for r in await decisions_of(agent, harness.kernel))

    await wait_until(done, timeout=10)
    return next(r for r in await decisions_of(agent, harness.kernel) if r["id"] == row["id"])
