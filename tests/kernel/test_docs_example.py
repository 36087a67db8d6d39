"""The plugin and the tests in docs/writing-a-plugin.md work as the document says, with the kernel's fixtures."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import pytest

from botcriptofy import HealthCheck, hookimpl

DOC = Path(__file__).resolve().parents[2] / "docs" / "writing-a-plugin.md"


def blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)


def example_plugin() -> types.ModuleType:
    """The plugin of the first block, with the health checks and metrics of the second."""
    module = types.ModuleType("botcriptofy_hello")
    plugin, health_and_metrics, _ = blocks()[:3]
    exec(compile(plugin, str(DOC), "exec"), module.__dict__)
    exec(compile(health_and_metrics, str(DOC), "exec"), module.__dict__)
    return module


@pytest.fixture
def documented(monkeypatch) -> dict:
    """The test functions of the document's testing example, importing the example plugin as ``botcriptofy_hello``."""
    monkeypatch.setitem(sys.modules, "botcriptofy_hello", example_plugin())
    namespace: dict = {"__name__": "documented_tests"}
    exec(compile(blocks()[2], str(DOC), "exec"), namespace)
    return namespace


def test_every_documented_test_is_run_here():
    documented_tests = set(re.findall(r"^async def (test_\w+)", blocks()[2], re.M))
    assert documented_tests == {"test_greets", "test_over_real_http", "test_on_both_databases", "test_with_redis"}


async def test_documented_greets(documented, kernel_harness):
    await documented["test_greets"](kernel_harness)


async def test_documented_over_real_http(documented, live_server):
    await documented["test_over_real_http"](live_server)


async def test_documented_on_both_databases(documented, kernel_harness, database_url):
    await documented["test_on_both_databases"](kernel_harness, database_url)


async def test_documented_with_redis(documented, kernel_harness, redis_url, redis_prefix):
    await documented["test_with_redis"](kernel_harness, redis_url, redis_prefix)


async def test_documented_plugin_refuses_bad_input(kernel_harness):
    harness = await kernel_harness(plugins={"hello": example_plugin()}, settings={"hello": {"greeting": "oi"}})
    assert (await harness.client.post("/v1/hello", json={"names": []})).status_code == 422


async def test_documented_metrics_are_registered_while_the_plugin_runs(kernel_harness):
    hello = example_plugin()
    harness = await kernel_harness(plugins={"hello": hello})
    assert harness.runtime.metrics.get_sample_value("hello_greetings_total") == 0.0
    hello.greetings(harness.kernel).inc()
    assert harness.runtime.metrics.get_sample_value("hello_greetings_total") == 1.0
    await harness.apply({"plugins": {"disabled": ["hello"]}})
    assert harness.runtime.metrics.get_sample_value("hello_greetings_total") is None


async def test_check_names_are_prefixed_with_the_plugin_once(kernel_harness):
    class Checks:
        @hookimpl
        def health_checks(self, kernel):
            return [
                HealthCheck("notify_file", lambda: True),
                HealthCheck("hello.disk", lambda: True),
                HealthCheck("helloworld.queue", lambda: True),
            ]

    harness = await kernel_harness(plugins={"hello": Checks()})
    checks = (await harness.client.get("/-/ready")).json()["checks"]
    assert {"hello.notify_file", "hello.disk", "hello.helloworld.queue"} <= set(checks)
    assert not any(name.startswith("hello.hello.") for name in checks)
