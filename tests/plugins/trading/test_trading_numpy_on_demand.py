"""A worker that serves no backtest or bot does not load numpy (about 20 MB of RSS per worker); a backtest does.

Checked in a fresh interpreter (the test process has numpy loaded already): a runtime with every
installed plugin but the workflows plugin (its local Temporal server is slow to start and unrelated)
starts and answers an HTTP request, then numpy must still be absent; a backtest computed afterwards
loads it and gives its result.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

PROBE = textwrap.dedent(
    """
    import asyncio, json, sys
    from datetime import UTC, datetime, timedelta
    from pathlib import Path

    import httpx

    from botcriptofy import Runtime
    from botcriptofy.testing import render_settings

    async def main():
        directory = Path(sys.argv[1])
        sections = {"plugins": {"disabled": ["workflows"]}, "storage": {"url": f"sqlite+aiosqlite:///{directory / 'db.sqlite'}"}}
        (directory / "settings.toml").write_text(render_settings(sections, state_dir=directory / "state"))
        runtime = Runtime(directory, env="testing", discover=True, watch=False)
        await runtime.start()
        try:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=runtime), base_url="http://test") as client:
                status = (await client.get("/v1/trading/strategies")).status_code
            served = "numpy" in sys.modules
            from botcriptofy_trading._backtests import compute
            from botcriptofy_trading._strategy import SmaCross

            start = datetime(2026, 1, 1, tzinfo=UTC)
            rows = [
                {"time": start + timedelta(hours=i), "open": 1.0 + i % 7, "high": 9.0, "low": 0.5, "close": 1.0 + i % 5}
                for i in range(60)
            ]
            result = compute(SmaCross, SmaCross.Parameters(fast=3, slow=8), rows, {"cash": 1000.0, "fee_rate": 0.0}, 10)
            print(json.dumps({"status": status, "numpy_after_serving": served, "numpy_after_backtest": "numpy" in sys.modules,
                              "candles": result["candles"]}))
        finally:
            await runtime.stop()

    asyncio.run(main())
    """
)


def test_numpy_is_loaded_by_the_first_backtest_not_by_starting_or_serving(tmp_path):
    done = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["status"] in (200, 401)  # served (the strategies list may need credentials)
    assert found["numpy_after_serving"] is False
    assert found["numpy_after_backtest"] is True
    assert found["candles"] == 60
