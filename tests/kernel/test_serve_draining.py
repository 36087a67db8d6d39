"""A draining worker tells its keep-alive clients to leave: every response from then on closes its connection.

Run on a real uvicorn server (the ``DrainingServer`` and ``CloseWhenDraining`` that ``serve`` uses),
over raw sockets, so the bytes on the wire are what is checked: a response in flight when draining
starts, and a request that arrives on an open connection while draining, both end their connection.
"""

from __future__ import annotations

import asyncio
import socket

import uvicorn

from botcriptofy._serve import CloseWhenDraining, DrainingServer


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def read_response(reader: asyncio.StreamReader) -> tuple[bytes, dict[bytes, bytes], bytes]:
    status = await asyncio.wait_for(reader.readline(), 5)
    headers: dict[bytes, bytes] = {}
    while (line := await asyncio.wait_for(reader.readline(), 5)) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get(b"content-length", b"0")))
    return status, headers, body


async def closed_by_server(reader: asyncio.StreamReader) -> bool:
    return await asyncio.wait_for(reader.read(1), 5) == b""


async def test_responses_close_their_connection_once_the_server_drains():
    release = asyncio.Event()
    entered = asyncio.Event()

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                await send({"type": f"{message['type']}.complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        if scope["path"] == "/slow":
            entered.set()
            await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain"), (b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = DrainingServer(config=config)
    config.app = CloseWhenDraining(app, server)  # as serve's worker wraps the runtime
    serving = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 - uvicorn offers no event for it
        await asyncio.sleep(0.01)
    try:
        idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", port)
        busy_reader, busy_writer = await asyncio.open_connection("127.0.0.1", port)
        idle_writer.write(b"GET /fast HTTP/1.1\r\nHost: test\r\n\r\n")
        status, headers, _ = await read_response(idle_reader)
        assert status.startswith(b"HTTP/1.1 200") and b"connection" not in headers  # before draining: kept alive

        busy_writer.write(b"GET /slow HTTP/1.1\r\nHost: test\r\n\r\n")
        await asyncio.wait_for(entered.wait(), 5)
        stopping = asyncio.create_task(server.shutdown())
        await asyncio.sleep(0.1)  # draining now; the slow response has not started

        release.set()
        status, headers, body = await read_response(busy_reader)
        assert (status[:12], body) == (b"HTTP/1.1 200", b"ok")
        assert headers.get(b"connection") == b"close"  # the response in flight when draining began
        assert await closed_by_server(busy_reader)

        idle_writer.write(b"GET /fast HTTP/1.1\r\nHost: test\r\n\r\n")  # an open keep-alive connection, used while draining
        status, headers, _ = await read_response(idle_reader)
        assert status.startswith(b"HTTP/1.1 200")
        assert headers.get(b"connection") == b"close"
        assert await closed_by_server(idle_reader)
        await asyncio.wait_for(stopping, 10)
        for writer in (idle_writer, busy_writer):
            writer.close()
            await writer.wait_closed()
    finally:
        release.set()
        server.should_exit = True
        await asyncio.wait_for(serving, 10)


async def test_outside_draining_the_wrapper_hands_the_servers_send_to_the_app():
    seen = []

    async def app(scope, receive, send):
        seen.append(send)

    class Server:
        draining = False

    async def send(message):
        pass

    wrapper = CloseWhenDraining(app, Server())  # type: ignore[arg-type]
    await wrapper({"type": "http"}, None, send)
    assert seen == [send]  # no wrapper of send on every request; draining is handled by the server
