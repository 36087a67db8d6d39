"""Fixtures for the staff channel's tests: storage, auth and notifications over SQLite and PostgreSQL, staff, a recording channel."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import pytest

import botcriptofy_auth
import botcriptofy_notifications
import botcriptofy_storage
from botcriptofy import Delivery, DeliveryRefused, hookimpl
from botcriptofy_auth._accounts import create_staff

FAST_HASH = {"argon2_time_cost": 1, "argon2_memory_cost": 1024, "argon2_parallelism": 1}
PASSWORD = "correct horse battery staple"
FAST_NOTIFICATIONS = {"poll_interval": 0.05, "retry_base": 0.05, "retry_max": 0.2, "lease_ttl": 2.0}


def settings(database_url: str, **sections: Mapping[str, Any]) -> dict[str, Any]:
    merged: dict[str, Any] = {
        "storage": {"url": database_url, "relay_poll_interval": 0.05},
        "auth": dict(FAST_HASH),
        "notifications": dict(FAST_NOTIFICATIONS),
    }
    for name, values in sections.items():
        merged.setdefault(name, {}).update(values)
    return merged


class RecordingChannel:
    """A channel that records what it is given; ``failures`` sends fail first, ``refuse`` refuses people without an e-mail."""

    def __init__(self, name: str = "test", *, group_departments: bool = False) -> None:
        self.name = name
        self.group_departments = group_departments
        self.sent: list[Delivery] = []
        self.failures = 0
        self.refuse_without_email = False

    def route(self, address: str) -> str | None:
        if self.group_departments and address.startswith("department:"):
            return "address"
        return "person"

    async def send(self, delivery: Delivery) -> None:
        if self.refuse_without_email and (delivery.recipient is None or not delivery.recipient.email):
            raise DeliveryRefused("no e-mail address")
        if self.failures > 0:
            self.failures -= 1
            raise ConnectionError("channel down")
        self.sent.append(delivery)


class ChannelPlugin:
    def __init__(self, *channels: RecordingChannel) -> None:
        self.channels = list(channels)

    @hookimpl
    def notification_channels(self, kernel: Any) -> list[RecordingChannel]:
        return self.channels


@pytest.fixture
def make_staff_kernel(database_url: str, kernel_harness: Any) -> Callable[..., Awaitable[Any]]:
    """``await make_staff_kernel(plugins=..., **sections)``: storage, auth and notifications on ``database_url``."""

    async def make(*, plugins: Mapping[str, Any] | None = None, url: str | None = None, **sections: Any) -> Any:
        merged = {"storage": botcriptofy_storage, "auth": botcriptofy_auth, "notifications": botcriptofy_notifications, **(plugins or {})}
        return await kernel_harness(plugins=merged, settings=settings(url or database_url, **sections))

    return make


async def add_staff(harness: Any, email: str, roles: dict[str, str], *, name: str = "Staff Member") -> str:
    user = await create_staff(harness.kernel, email=email, name=name, password=PASSWORD, roles=roles, by="test")
    return str(user.id)


async def token_for(harness: Any, email: str) -> dict[str, str]:
    response = await harness.client.post("/v1/auth/login", json={"email": email, "password": PASSWORD})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}
