"""Billing's dunning reminders on the time-skipping server: 24, 72 and 168 hours, cancelled by a payment."""

from __future__ import annotations

import pytest

from botcriptofy.testing import wait_until
from botcriptofy_billing import BillingPlugin, Money, PaymentFailed, PaymentSucceeded
from botcriptofy_workflows import WorkflowsPlugin

from .conftest import settings

pytestmark = pytest.mark.timeout(60)

HOUR = 3600


@pytest.fixture
async def billing_harness(kernel_harness, time_skipping, probe):
    harness = await kernel_harness(
        plugins={"workflows": WorkflowsPlugin(client=time_skipping.client), "billing": BillingPlugin(), "probe": probe},
        settings=settings(),
    )
    yield harness
    await harness.close()


def failed(invoice="in_1"):
    return PaymentFailed(
        tenant_id="t1",
        invoice_id=invoice,
        subscription_id="sub_1",
        amount_due=Money(amount_minor=2900, currency="BRL"),
        attempt_count=1,
        next_payment_attempt=None,
        final=False,
    )


def reminders(probe):
    return [(n.recipient, n.data["invoice_id"], n.data["hours"]) for n in probe.notifications if n.data.get("kind") == "billing.dunning"]


async def test_dunning_reminds_at_24_72_and_168_hours(billing_harness, probe, time_skipping):
    kernel = billing_harness.kernel
    await kernel.events.publish(failed())
    # Stripe retries the payment and fails again: the same reminders, not a second series.
    await kernel.events.publish(failed())
    await time_skipping.sleep(23 * HOUR)
    assert reminders(probe) == []
    await time_skipping.sleep(2 * HOUR)
    await wait_until(lambda: len(reminders(probe)) == 1)
    await time_skipping.sleep(48 * HOUR)
    await wait_until(lambda: len(reminders(probe)) == 2)
    await time_skipping.sleep(96 * HOUR)
    result = await kernel.workflows().wait("billing.dunning.in_1")
    assert result == {"outcome": "reminded", "reminders": [24, 72, 168]}
    assert reminders(probe) == [("tenant:t1", "in_1", 24), ("tenant:t1", "in_1", 72), ("tenant:t1", "in_1", 168)]
    assert "R$" not in probe.notifications[0].body and "BRL 29.00" in probe.notifications[0].body


async def test_a_payment_between_reminders_cancels_the_rest(billing_harness, probe, time_skipping):
    kernel = billing_harness.kernel
    await kernel.events.publish(failed())
    await time_skipping.sleep(25 * HOUR)
    await wait_until(lambda: len(reminders(probe)) == 1)
    await kernel.events.publish(
        PaymentSucceeded(tenant_id="t1", invoice_id="in_1", subscription_id="sub_1", amount_paid=Money(amount_minor=2900, currency="BRL"))
    )
    result = await kernel.workflows().wait("billing.dunning.in_1")
    assert result == {"outcome": "paid", "reminders": [24]}
    await time_skipping.sleep(200 * HOUR)
    assert reminders(probe) == [("tenant:t1", "in_1", 24)]
    run = await kernel.workflows().describe("billing.dunning.in_1")
    assert run is not None and run.status == "completed" and run.task_queue == "botcriptofy.billing"


async def test_a_payment_for_an_invoice_without_dunning_is_harmless(billing_harness, probe):
    kernel = billing_harness.kernel
    assert await kernel.workflows().signal("billing.dunning.in_unknown", "paid") is False
    assert await kernel.workflows().cancel("billing.dunning.in_unknown") is False
    assert await kernel.workflows().describe("billing.dunning.in_unknown") is None
