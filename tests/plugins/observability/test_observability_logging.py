"""The observability plugin's logs: JSON formatting and the root level, both live, put back when the plugin stops."""

from __future__ import annotations

import io
import json
import logging
import types
from collections.abc import Iterator

import pytest

import botcriptofy_observability as observability
from botcriptofy import Route, hookimpl
from botcriptofy.testing import wait_until


class Slow:
    @hookimpl
    def register_routes(self, kernel):
        async def slow(request):
            return {"ok": True}

        return [Route("/v1/orders/{order_id}", slow)]


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    """A handler on a logger of its own, as uvicorn's loggers have, writing into a buffer."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("test.observability")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield buffer
    logger.removeHandler(handler)
    logger.propagate = True


def lines(buffer: io.StringIO) -> list[str]:
    text = buffer.getvalue()
    buffer.seek(0)
    buffer.truncate()
    return text.splitlines()


async def test_json_logs_are_one_object_per_line_with_extras_and_can_be_switched_live(kernel_harness, stream):
    root_level = logging.getLogger().level
    harness = await kernel_harness(plugins={"observability": observability}, settings={"observability": {"json_logs": True}})
    logger = logging.getLogger("test.observability")
    logger.info("order %s filled", "o-1", extra={"plugin": "billing", "tenant_id": "t-1"})
    try:
        raise ValueError("bad price")
    except ValueError:
        logger.exception("order failed")
    first, second = (json.loads(line) for line in lines(stream) if line.startswith("{"))
    assert first["message"] == "order o-1 filled" and first["level"] == "INFO" and first["logger"] == "test.observability"
    assert first["plugin"] == "billing" and first["tenant_id"] == "t-1" and isinstance(first["pid"], int)
    assert first["time"].endswith("Z")
    assert "ValueError: bad price" in second["exception"]

    result = await harness.apply({"observability": {"json_logs": False}})
    assert result.changes["reconfigured"] == ["observability"]
    logger.info("plain again")
    assert lines(stream) == ["INFO test.observability: plain again"]

    await harness.apply({"observability": {"json_logs": True}})
    logger.info("json again")
    assert json.loads(lines(stream)[0])["message"] == "json again"

    await harness.apply({"plugins": {"disabled": ["observability"]}})
    await harness.runtime.stop()  # the retired generation's shutdown runs when it has drained
    logger.info("after the plugin stopped")
    assert lines(stream) == ["INFO test.observability: after the plugin stopped"]
    assert logging.getLogger().level == root_level


async def test_log_level_is_live_and_restored_when_the_plugin_stops(kernel_harness):
    root = logging.getLogger()
    before = root.level
    harness = await kernel_harness(plugins={"observability": observability}, settings={"observability": {"log_level": "debug"}})
    assert root.level == logging.DEBUG
    await harness.apply({"observability": {"log_level": "ERROR"}})
    assert root.level == logging.ERROR
    await harness.runtime.stop()
    assert root.level == before


def plugin_copy(name: str, stopped: list[int]) -> types.ModuleType:
    """A distinct plugin object with the observability hooks, as a code upgrade would install."""
    module = types.ModuleType(name)
    for hook in ("plugin_settings_schema", "startup", "settings_changed", "register_metrics", "register_routes", "register_middleware"):
        setattr(module, hook, getattr(observability, hook))

    @hookimpl
    async def shutdown(kernel):
        await observability.shutdown(kernel)
        stopped.append(kernel.generation)

    module.shutdown = shutdown
    return module


async def test_a_restart_does_not_let_the_old_generation_undo_the_new_ones_logging(kernel_harness, stream):
    stopped: list[int] = []
    harness = await kernel_harness(plugins={"observability": plugin_copy("first", stopped)},
                                   settings={"observability": {"json_logs": True}})
    # A code upgrade restarts the plugin: the new generation starts it before the old one stops it.
    harness.runtime.extra_plugins["observability"] = plugin_copy("upgraded", stopped)
    result = await harness.runtime.rescan(source="test")
    assert result.changes["restarted"] == ["observability"]
    await wait_until(lambda: stopped == [1])
    logging.getLogger("test.observability").info("still json")
    assert json.loads(lines(stream)[0])["message"] == "still json"
    assert (await harness.client.get("/metrics")).status_code == 200


async def test_slow_request_log_is_json_with_its_fields(kernel_harness, stream):
    harness = await kernel_harness(plugins={"observability": observability, "slow": Slow()},
                                   settings={"observability": {"json_logs": True, "slow_request_ms": 0.0001}})
    logger = logging.getLogger("botcriptofy.observability")
    handler = logging.getLogger("test.observability").handlers[0]
    logger.addHandler(handler)
    try:
        assert (await harness.client.get("/v1/orders/42")).status_code == 200
    finally:
        logger.removeHandler(handler)
    records = [json.loads(line) for line in lines(stream) if line.startswith("{")]
    assert len(records) == 1
    record = records[0]
    assert record["level"] == "WARNING" and record["route"] == "/v1/orders/{order_id}" and record["path"] == "/v1/orders/42"
    assert record["status"] == 200 and record["generation"] == 1 and record["duration_ms"] >= 0
