"""Loopback-only admin never trusts a peer address a proxy may stand in for; trusted proxies change at restart."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("header", ["x-forwarded-for", "forwarded", "x-real-ip", "via", "x-forwarded-host"])
async def test_a_proxy_header_closes_the_loopback_admin_routes(kernel_client, header):
    assert (await kernel_client.get("/v1/admin/config")).status_code == 200
    response = await kernel_client.get("/v1/admin/config", headers={header: "127.0.0.1"})
    assert response.status_code == 403
    assert "never through a proxy" in response.json()["detail"]


async def test_with_trusted_proxies_a_loopback_peer_is_not_a_local_client(kernel_harness):
    harness = await kernel_harness(settings={"kernel": {"trusted_proxies": ["127.0.0.1", "10.0.0.0/8"]}})
    assert (await harness.client.get("/v1/admin/config")).status_code == 403
    assert (await harness.client.get("/-/health")).status_code == 200


async def test_trusted_proxies_are_validated_and_change_only_at_a_restart(kernel_harness):
    harness = await kernel_harness()
    result = await harness.apply({"kernel": {"trusted_proxies": ["proxy.internal"]}})
    assert not result.applied and "key 'kernel.trusted_proxies'" in result.error and "not an IP address" in result.error
    result = await harness.apply({"kernel": {"trusted_proxies": ["10.0.0.5"]}})
    assert not result.applied and "restart" in result.error and "kernel.trusted_proxies" in result.error
