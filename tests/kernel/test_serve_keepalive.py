"""`botcriptofy serve` keeps an idle keep-alive connection open longer than common clients do.

A server that closes an idle connection at the moment its client reuses it fails that request, and a
client does not retry a POST. httpx drops its own idle connections after 5 s, so a server closing
them after 5 s races every httpx client that waits about that long between two calls.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from botcriptofy._manager import discover

BOTCRIPTOFY = str(Path(sys.executable).with_name("botcriptofy"))
BODY = b'{"files": {}}'
REQUEST = b"POST /v1/admin/config/check HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n" + (
    b"Content-Length: %d\r\n\r\n%s" % (len(BODY), BODY)
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(tmp_path: Path, name: str, *options: str) -> tuple[subprocess.Popen[bytes], int]:
    settings = tmp_path / name / "settings"
    settings.mkdir(parents=True)
    listed = ", ".join(f'"{plugin}"' for plugin in sorted(discover()))
    (settings / "settings.toml").write_text(
        f"[default.kernel]\nstate_dir = '{tmp_path / name / 'state'}'\n\n[default.plugins]\ndisabled = [{listed}]\n"
    )
    port = free_port()
    server = subprocess.Popen(
        [BOTCRIPTOFY, "--settings", str(settings), "serve", "--port", str(port), *options],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    return server, port


async def connected(server: subprocess.Popen[bytes], port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    deadline = time.monotonic() + 60
    while True:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            pass
        else:
            # gunicorn listens before its worker has started the application (5.5 s under CI load): a connection made
            # then waits for the worker, so a first answer slower than the read timeout is a reason to try again.
            writer.write(b"GET /-/health HTTP/1.1\r\nHost: test\r\n\r\n")
            try:
                status = await asyncio.wait_for(reader.readline(), 5)
            except TimeoutError:
                status = b""
            if status.startswith(b"HTTP/1.1 200"):
                await read_rest(reader)
                return reader, writer
            writer.close()
        assert server.poll() is None, "server exited"
        assert time.monotonic() < deadline, "server did not start"
        await asyncio.sleep(0.1)


async def read_rest(reader: asyncio.StreamReader) -> bytes:
    length = 0
    while (line := await asyncio.wait_for(reader.readline(), 5)) not in (b"\r\n", b""):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return await reader.readexactly(length)


@pytest.mark.slow
async def test_an_idle_connection_outlives_common_client_timeouts_and_the_option_sets_it(tmp_path):
    default, default_port = start(tmp_path, "default")
    short, short_port = start(tmp_path, "short", "--keep-alive", "2")
    writers = []
    try:
        (kept, kept_writer), (dropped, dropped_writer) = await asyncio.gather(
            connected(default, default_port), connected(short, short_port)
        )
        writers = [kept_writer, dropped_writer]
        await asyncio.sleep(6.5)  # longer than httpx's own 5 s, idle on both connections

        # The default server still answers on the idle connection, a POST included.
        kept_writer.write(REQUEST)
        status = await asyncio.wait_for(kept.readline(), 5)
        assert status.startswith(b"HTTP/1.1 200"), status
        assert b'"valid"' in await read_rest(kept)

        # `--keep-alive 2` closed it after 2 s.
        assert await asyncio.wait_for(dropped.read(), 5) == b""
    finally:
        for writer in writers:
            writer.close()
        outputs = []
        for server in (default, short):
            server.terminate()
            outputs.append(server.communicate(timeout=15)[0].decode())
        print(*outputs, sep="\n")  # shown by pytest when the test fails
    assert all("Traceback" not in output for output in outputs), outputs


async def test_the_live_server_fixture_keeps_idle_connections_like_serve(live_server):
    """Plugin authors' tests call ``live_server`` with httpx: an idle pause of 5-6 s must not fail the next request."""
    server = await live_server()
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        writer.write(b"GET /-/health HTTP/1.1\r\nHost: test\r\n\r\n")
        assert (await asyncio.wait_for(reader.readline(), 5)).startswith(b"HTTP/1.1 200")
        await read_rest(reader)
        await asyncio.sleep(6)
        writer.write(REQUEST)
        assert (await asyncio.wait_for(reader.readline(), 5)).startswith(b"HTTP/1.1 200")
    finally:
        writer.close()
