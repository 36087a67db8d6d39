"""The plugin in docs/writing-a-plugin.md works as the document says."""

from __future__ import annotations

import re
import types
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "writing-a-plugin.md"


def example_plugin() -> types.ModuleType:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    module = types.ModuleType("botcriptofy_hello")
    exec(compile(blocks[0], str(DOC), "exec"), module.__dict__)
    return module


async def test_documented_plugin_and_test_work(kernel_harness):
    hello = example_plugin()
    harness = await kernel_harness(plugins={"hello": hello}, settings={"hello": {"greeting": "oi"}})
    response = await harness.client.post("/v1/hello", json={"names": ["Ana"]})
    assert response.json() == {"lines": ["oi, Ana"]}
    result = await harness.apply({"hello": {"greeting": "olá"}})
    assert result.changes["reconfigured"] == ["hello"]
    assert (await harness.client.post("/v1/hello", json={"names": []})).status_code == 422
