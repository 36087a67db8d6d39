"""A fixed-arrival-rate (open-loop) HTTP/1.1 load generator on asyncio, for the bench scripts.

A closed-loop tool such as wrk sends the next request when an answer comes back, so a slow server
is sent less and its queueing never shows up in the percentiles. Here request ``i`` is *due* at
``start + i / rate`` whatever happened before, and its latency is measured from that due time (not
from when a connection was free to send it): time spent waiting for a connection counts, which is
what a client arriving at that moment would see.

Requests go over a pool of keep-alive connections (opened as needed up to ``max_connections``);
answers are parsed just enough to find their end (``Content-Length``). Errors are connection
failures, timeouts and statuses outside 2xx/3xx. Usage from a script::

    result = asyncio.run(open_loop("127.0.0.1", port, "/v1/me", rate=500, duration=10, headers={...}))
    print(result.line())

or from the command line: ``python bench/_openloop.py http://127.0.0.1:8000/v1/me --rate 500 --duration 10
-H 'Authorization: Bearer ...'``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass
class OpenLoopResult:
    """Latencies (seconds, from each request's due time) and failures of one run."""

    rate: float
    duration: float
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    sent: int = 0
    late_start: float = 0.0  # the largest delay between a request's due time and its sending began
    load_average: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def percentile(self, q: float) -> float:
        """Nearest-rank percentile of the latencies, in milliseconds (q in 0-100)."""
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        index = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
        return ordered[index] * 1000

    @property
    def failures(self) -> int:
        bad = sum(count for status, count in self.statuses.items() if not 200 <= status < 400)
        return bad + sum(self.errors.values())

    @property
    def achieved(self) -> float:
        return len(self.latencies) / self.duration if self.duration else 0.0

    def summary(self) -> dict[str, object]:
        return {
            "target_rate": self.rate,
            "achieved_rate": round(self.achieved, 1),
            "requests": self.sent,
            "p50_ms": round(self.percentile(50), 3),
            "p95_ms": round(self.percentile(95), 3),
            "p99_ms": round(self.percentile(99), 3),
            "max_ms": round(max(self.latencies) * 1000, 3) if self.latencies else None,
            "failures": self.failures,
            "errors": dict(self.errors),
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "load_average": [round(x, 2) for x in self.load_average],
        }

    def line(self) -> str:
        return (
            f"{self.achieved:,.0f}/{self.rate:,.0f} req/s  p50 {self.percentile(50):.2f} ms  p95 {self.percentile(95):.2f} ms  "
            f"p99 {self.percentile(99):.2f} ms  failures {self.failures}  (load average {self.load_average[0]:.2f})"
        )


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def request(self, payload: bytes) -> int:
        self.writer.write(payload)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
                break
        if length:
            await self.reader.readexactly(length)
        return status

    def close(self) -> None:
        self.writer.close()


async def open_loop(
    host: str,
    port: int,
    path: str,
    *,
    rate: float,
    duration: float,
    headers: dict[str, str] | None = None,
    max_connections: int = 256,
    timeout: float = 2.0,  # noqa: ASYNC109 - per request, as wrk's
    paths: list[str] | None = None,
) -> OpenLoopResult:
    """Send ``rate`` requests per second for ``duration`` seconds; return what came back.

    ``paths`` (optional) are cycled through instead of ``path``, for a mixed load.
    """
    extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
    payloads = [f"GET {p} HTTP/1.1\r\nHost: {host}:{port}\r\n{extra}\r\n".encode() for p in (paths or [path])]
    result = OpenLoopResult(rate=rate, duration=duration)
    idle: list[_Connection] = []
    opened = 0
    waiting: asyncio.Queue[_Connection] = asyncio.Queue()
    loop = asyncio.get_running_loop()

    async def connection() -> _Connection:
        nonlocal opened
        if idle:
            return idle.pop()
        if opened < max_connections:
            opened += 1
            try:
                reader, writer = await asyncio.open_connection(host, port)
            except OSError:
                opened -= 1
                raise
            return _Connection(reader, writer)
        return await waiting.get()

    def release(conn: _Connection) -> None:
        if waiting._getters:  # type: ignore[attr-defined]  # someone waits: hand it over directly
            waiting.put_nowait(conn)
        else:
            idle.append(conn)

    async def send(payload: bytes) -> tuple[_Connection, int]:
        nonlocal opened
        conn = await connection()
        try:
            return conn, await conn.request(payload)
        except (OSError, asyncio.IncompleteReadError):
            # A kept-alive connection the server closed while idle (its keep-alive timeout): as any HTTP client
            # does, send once more on a new connection. A failure there counts.
            conn.close()  # the slot it held is reused by the new connection
            reader, writer = await asyncio.open_connection(host, port)
            conn = _Connection(reader, writer)
            try:
                return conn, await conn.request(payload)
            except BaseException:
                conn.close()
                opened -= 1
                raise

    async def one(due: float, payload: bytes) -> None:
        nonlocal opened
        result.late_start = max(result.late_start, loop.time() - due)
        conn: _Connection | None = None
        try:
            async with asyncio.timeout(timeout):
                conn, status = await send(payload)
        except TimeoutError:
            result.errors["timeout"] += 1
            return
        except (OSError, asyncio.IncompleteReadError, ValueError) as error:
            result.errors[type(error).__name__] += 1
            return
        result.latencies.append(loop.time() - due)
        result.statuses[status] += 1
        release(conn)

    tasks: set[asyncio.Task[None]] = set()
    total = int(rate * duration)
    start = loop.time() + 0.05
    for index in range(total):
        due = start + index / rate
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        task = loop.create_task(one(due, payloads[index % len(payloads)]))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        result.sent += 1
    if tasks:
        await asyncio.wait(tasks)
    result.duration = max(duration, loop.time() - start) if result.sent else duration
    for conn in idle:
        conn.close()
    result.load_average = os.getloadavg()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url")
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("-H", dest="headers", action="append", default=[], help="'Name: value'")
    args = parser.parse_args()
    parts = urlsplit(args.url)
    headers = dict(h.split(": ", 1) for h in args.headers)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    started = time.time()
    result = asyncio.run(
        open_loop(
            parts.hostname or "127.0.0.1", parts.port or 80, parts.path or "/", rate=args.rate, duration=args.duration, headers=headers
        )
    )
    print(result.line(), f"({time.time() - started:.1f} s)")


if __name__ == "__main__":
    main()
