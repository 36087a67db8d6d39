"""Helpers shared by the bench scripts: free ports, servers as subprocesses, wrk runs and their numbers.

Not a bench script itself (``run_all.py`` skips files starting with ``_``).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
BOTCRIPTOFY = str(BIN / "botcriptofy")

# wrk calls done() once at the end: print the numbers wrk's own report lacks (p95) as one JSON line.
_REPORT_LUA = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"requests":%d,"duration_us":%d,"p50_us":%d,"p90_us":%d,"p95_us":%d,"p99_us":%d,"max_us":%d,' ..
    '"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90), latency:percentile(95),
    latency:percentile(99), latency.max, e.connect, e.read, e.write, e.status, e.timeout))
end
"""


def machine() -> str:
    """A one-line description of the machine the numbers come from."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return (f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, "
            f"{platform.system()} {platform.release()}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def need(tool: str) -> str:
    found = shutil.which(tool)
    if found is None:
        sys.exit(f"{tool} is not installed: apt-get install -y {tool}")
    return found


@dataclass
class WrkResult:
    """One wrk run: throughput, latency percentiles (ms) and every kind of failure wrk counts."""

    requests: int
    seconds: float
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    connect_errors: int
    read_errors: int
    write_errors: int
    timeouts: int
    non_2xx_3xx: int
    output: str

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def failures(self) -> int:
        return self.connect_errors + self.read_errors + self.write_errors + self.timeouts + self.non_2xx_3xx

    def line(self) -> str:
        return (f"{self.rps:>9.0f} req/s  p50 {self.p50_ms:6.2f} ms  p95 {self.p95_ms:6.2f} ms  p99 {self.p99_ms:6.2f} ms"
                f"  failures {self.failures}")


def lua_script(directory: Path, request_lua: str = "") -> Path:
    path = directory / f"wrk-{abs(hash(request_lua))}.lua"
    path.write_text(textwrap.dedent(request_lua) + _REPORT_LUA)
    return path


def parse_wrk(output: str) -> WrkResult:
    for line in output.splitlines():
        if line.startswith("BENCHJSON "):
            data = json.loads(line.removeprefix("BENCHJSON "))
            break
    else:
        raise RuntimeError(f"wrk printed no report:\n{output}")
    ms = 1000.0
    return WrkResult(
        requests=data["requests"], seconds=data["duration_us"] / 1e6,
        p50_ms=data["p50_us"] / ms, p90_ms=data["p90_us"] / ms, p95_ms=data["p95_us"] / ms, p99_ms=data["p99_us"] / ms,
        max_ms=data["max_us"] / ms, connect_errors=data["connect"], read_errors=data["read"], write_errors=data["write"],
        timeouts=data["timeout"], non_2xx_3xx=data["status"], output=output,
    )


def wrk_command(url: str, script: Path, *, threads: int = 2, connections: int = 50, duration: str = "10s",
                timeout: str = "2s") -> list[str]:
    return [need("wrk"), f"-t{threads}", f"-c{connections}", f"-d{duration}", f"--timeout={timeout}", "--latency", "-s", str(script), url]


def run_wrk(url: str, script: Path, **options: str | int) -> WrkResult:
    done = subprocess.run(wrk_command(url, script, **options), capture_output=True, text=True, check=True)  # type: ignore[arg-type]
    return parse_wrk(done.stdout)


def stop_wrk(process: subprocess.Popen[str]) -> WrkResult:
    """Stop a wrk started with a long duration: on SIGINT it stops and prints its report."""
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=30)
    return parse_wrk(output)


class Server:
    """A server subprocess on a free port; its output goes to a log file."""

    def __init__(self, name: str, command: Sequence[str], *, port: int, health: str, cwd: Path, env: dict[str, str] | None = None,
                 log_dir: Path) -> None:
        self.name = name
        self.port = port
        self.health = health
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("w")
        self.process = subprocess.Popen(list(command), cwd=cwd, env={**os.environ, **(env or {})}, stdout=self._log,
                                        stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{self.log_path.read_text()[-4000:]}")
            try:
                with urllib.request.urlopen(self.base + self.health, timeout=1) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not answer {self.health} within {timeout} s:\n{self.log_path.read_text()[-4000:]}")

    def get_json(self, path: str) -> object:
        with urllib.request.urlopen(self.base + path, timeout=5) as response:
            return json.loads(response.read())

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)  # the server and the workers it spawned, nothing else
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._log.close()


@contextlib.contextmanager
def scratch(prefix: str) -> Iterator[Path]:
    keep = os.environ.get("BENCH_KEEP")
    directory = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield directory
    finally:
        if keep:
            print(f"(kept {directory})")
        else:
            shutil.rmtree(directory, ignore_errors=True)


# Settings the benches apply to installed plugins so that a load from one address is measured, not refused:
# the rate limiter runs in observe mode (every limit computed and every header sent, nothing refused).
BENCH_OVERRIDES = {
    "ratelimit": "enforce = false\n",
}


def installed_plugins() -> list[str]:
    """Names of the plugins installed in this environment (the ``botcriptofy`` entry-point group)."""
    import importlib.metadata

    return sorted({entry.name for entry in importlib.metadata.entry_points(group="botcriptofy")})


def bench_overrides() -> str:
    installed = set(installed_plugins())
    return "".join(f"\n[default.{name}]\n{text}" for name, text in BENCH_OVERRIDES.items() if name in installed)


def write_settings(directory: Path, *, state_dir: Path, disabled: Sequence[str] = (), extra: str | None = None) -> None:
    """Write ``settings.toml`` atomically, as an editor that saves through a temporary file does.

    ``extra`` (TOML appended to the file) defaults to :data:`BENCH_OVERRIDES` for the installed plugins.
    """
    listed = ", ".join(f'"{name}"' for name in disabled)
    if extra is None:
        extra = bench_overrides()
    text = f'[default.kernel]\nstate_dir = "{state_dir}"\n\n[default.plugins]\ndisabled = [{listed}]\n{extra}'
    temporary = directory / "settings.toml.tmp"
    temporary.write_text(text)
    os.replace(temporary, directory / "settings.toml")


def kernel_server(name: str, settings_dir: Path, *, port: int, workers: int, log_dir: Path, env: dict[str, str] | None = None,
                  health: str = "/-/health") -> Server:
    command = [BOTCRIPTOFY, "--settings", str(settings_dir), "serve", "--host", "127.0.0.1", "--port", str(port),
               "--workers", str(workers)]
    return Server(name, command, port=port, health=health, cwd=settings_dir.parent, env=env, log_dir=log_dir)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0-100)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]


POSTGRES_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


async def on_both_databases(bench: Any, *args: Any, sqlite_only: bool = False, prefix: str = "bcf-bench-") -> list[Any]:
    """Run ``await bench(name, url, *args)`` on a fresh SQLite file, then on a scratch PostgreSQL database (dropped after)."""
    import uuid

    import asyncpg

    results = []
    with tempfile.TemporaryDirectory(prefix=f"{prefix}sqlite-") as directory:
        results.append(await bench("sqlite", f"sqlite+aiosqlite:///{directory}/bench.db", *args))
    if not sqlite_only:
        name = f"bcf_bench_{uuid.uuid4().hex[:12]}"
        admin = await asyncpg.connect(POSTGRES_ADMIN)
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            url = POSTGRES_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://") + f"/{name}"
            results.append(await bench("postgresql", url, *args))
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await admin.close()
    return results
