"""The Temporal core's warnings are log records of the service, not lines on the process's stdout.

The SDK's default runtime writes them to stdout with terminal colour codes: into the output of a
process whose stdout is a protocol (a test worker printed one before its "ready" line), and outside
the service's log format and handlers.
"""

from __future__ import annotations

import subprocess
import sys

SLOW_WORKFLOW = """
import time

from temporalio import workflow


@workflow.defn(sandboxed=False)
class Slow:
    @workflow.run
    async def run(self) -> str:
        time.sleep(5.5)  # one workflow task longer than the 5 s the core warns about
        return "done"
"""

_CHILD = r"""
import asyncio, logging, socket, subprocess, sys
from pathlib import Path

logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="PYLOG %(name)s %(levelname)s %(message)s")
directory = Path(sys.argv[1])
sys.path.insert(0, str(directory))

from temporalio.client import Client
from temporalio.worker import Worker

from botcriptofy_workflows._engine import core_runtime
from botcriptofy_workflows._server import find_binary
from slow_workflow import Slow


async def main() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [find_binary(""), "server", "start-dev", "--headless", "--ip", "127.0.0.1", "--port", str(port)]
    command += ["--db-filename", str(directory / "temporal.db"), "--log-level", "error"]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(300):
            try:
                client = await Client.connect(f"127.0.0.1:{port}", runtime=core_runtime())
                break
            except Exception:
                await asyncio.sleep(0.1)
        async with Worker(client, task_queue="slow", workflows=[Slow], debug_mode=True):  # debug_mode: no deadlock detector
            result = await client.execute_workflow(Slow.run, id="slow", task_queue="slow")
        await asyncio.sleep(0.5)  # the runtime forwards the core's records in batches a few milliseconds apart
        print(result, flush=True)
    finally:
        server.terminate()
        server.wait()


asyncio.run(main())
"""


def test_a_core_warning_goes_to_the_workflows_logger_not_to_stdout(tmp_path):
    (tmp_path / "slow_workflow.py").write_text(SLOW_WORKFLOW)
    done = subprocess.run([sys.executable, "-c", _CHILD, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "done\n"  # nothing else on stdout, no colour codes
    warned = [line for line in done.stderr.splitlines() if "TMPRL1104" in line]  # "Workflow task duration exceeded 5 seconds"
    assert warned, done.stderr
    assert all(line.startswith("PYLOG botcriptofy.workflows.core") and " WARNING " in line for line in warned), done.stderr
