"""`botcriptofy serve`: gunicorn with uvicorn workers, and rolling restarts that replace one worker at a time.

``serve`` validates the settings, then replaces itself with a clean gunicorn master (this module's
:func:`main`) that never imports a plugin: each worker imports the kernel and the plugins from disk
after it is forked, so a restarted worker runs the code installed now.

A rolling restart (``SIGHUP`` to the master, or ``botcriptofy restart``) starts one new worker, waits
until it is ready (its plugins started, see ``<state_dir>/workers/<pid>.json``), then stops one old
worker gracefully (it stops accepting, finishes its requests and exits), and repeats. The listening
socket stays open in the master throughout, so no connection is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import json
import os
import signal
import sys
import tempfile
import time
from collections import deque
from pathlib import Path
from typing import Any

from gunicorn.app.base import BaseApplication
from gunicorn.arbiter import Arbiter
from uvicorn.server import Server
from uvicorn_worker import UvicornWorker

SERVE_ENVIRONMENT = "_BOTCRIPTOFY_SERVE"  # not BOTCRIPTOFY_*: that prefix is read as settings
METRICS_ENVIRONMENT = "PROMETHEUS_MULTIPROC_DIR"  # prometheus-client's multiprocess mode
PIDFILE = "botcriptofy.pid"
RESTART_STATUS = "restart.json"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Seconds an idle keep-alive connection stays open. A server that closes an idle connection as the client
# reuses it fails that request (a POST is not retried), so this stays above common clients' and proxies'
# own idle timeouts: httpx 5 s, aiohttp 15 s, nginx's upstream keepalive 60 s, AWS ALB 60 s.
KEEP_ALIVE = 75


class Worker(UvicornWorker):  # type: ignore[misc]
    """A uvicorn worker with the kernel's needs: lifespan required, no server header, proxies only when trusted."""

    CONFIG_KWARGS = {"loop": "auto", "http": "auto", "lifespan": "on", "server_header": False}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        configured = self.cfg.forwarded_allow_ips or []
        entries = configured.split(",") if isinstance(configured, str) else list(configured)
        trusted = [str(entry).strip() for entry in entries if str(entry).strip()]
        # Honour X-Forwarded-* only from kernel.trusted_proxies; with none, never.
        self.config.proxy_headers = bool(trusted)
        self.config.forwarded_allow_ips = trusted

    async def _serve(self) -> None:
        server = DrainingServer(config=self.config)
        self.config.app = CloseWhenDraining(self.wsgi, server)
        self._install_sigquit_handler()
        # uvicorn exits with gunicorn's "boot error" code when the lifespan start-up fails.
        with contextlib.suppress(SystemExit):
            await server.serve(sockets=self.sockets)
        if not server.started:
            # Not gunicorn's "boot error" code, which stops every worker: the master starts another one,
            # and a rolling restart that was waiting for this worker stops with the old workers serving.
            await asyncio.sleep(1)
            sys.exit(1)


class DrainingServer(Server):  # type: ignore[misc]
    """A uvicorn server that, told to stop, first lets its keep-alive clients leave cleanly.

    It stops accepting, answers every request still arriving on its open connections with
    ``Connection: close`` (the client reconnects, to another worker), and only after
    :attr:`DRAIN_GRACE` seconds closes the connections left idle. Closing an idle keep-alive
    connection at once would race a client sending on it, and that request would fail. A request in
    flight when draining starts is told by uvicorn's own flag: its response says ``Connection: close``
    (or, if it has started already, its connection closes after it).
    """

    DRAIN_GRACE = 2.0

    draining = False

    async def shutdown(self, sockets: list[Any] | None = None) -> None:
        self.draining = True
        for connection in list(self.server_state.connections):
            cycle = getattr(connection, "cycle", None)  # the request being served on it, if any
            if cycle is not None and not cycle.response_complete:
                cycle.keep_alive = False
        for server in self.servers:
            server.close()
        for sock in sockets or []:
            sock.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.DRAIN_GRACE
        while self.server_state.connections and loop.time() < deadline and not self.force_exit:  # noqa: ASYNC110 - no event for it
            await asyncio.sleep(0.05)
        await super().shutdown()


class CloseWhenDraining:
    """ASGI wrapper: a request that arrives once the server drains gets ``Connection: close``.

    Before that, ``send`` is handed to the app as it is (no wrapper per request): the requests in
    flight when draining starts are marked by :meth:`DrainingServer.shutdown`.
    """

    def __init__(self, app: Any, server: DrainingServer) -> None:
        self.app = app
        self.server = server

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, _settle_before_started(send))
            return
        if scope["type"] != "http" or not self.server.draining:
            await self.app(scope, receive, send)
            return

        async def send_closing(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = [(name, value) for name, value in message.get("headers", ()) if name.lower() != b"connection"]
                message = {**message, "headers": [*headers, (b"connection", b"close")]}
            await send(message)

        await self.app(scope, receive, send_closing)


def _settle_before_started(send: Any) -> Any:
    """Wrap the lifespan's ``send``: the heap is settled (:func:`settle_heap`) before the worker reports it started."""

    async def settling(message: Any) -> None:
        if message["type"] == "lifespan.startup.complete":
            settle_heap()
        await send(message)

    return settling


def settle_heap() -> None:
    """Collect once, then exempt every object alive now from later collections (``gc.freeze()``).

    A worker with every plugin holds a few hundred thousand objects made at start-up (modules, models,
    settings, routes). Each full collection walked them all: 200-270 ms with every first-party plugin,
    a stall of every request in flight, seen as the slowest requests of the open-loop bench. Frozen,
    they are walked no more; collections walk what requests and reloads make. Done before the worker
    takes requests. The price: a reference cycle alive now is never freed, so objects of the first
    configuration generation that a hot reload replaces stay in memory (a one-off, not a growth).
    """
    gc.collect()
    gc.freeze()


M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
MMAP_THRESHOLD = 128 * 1024  # glibc's initial value


def fix_mmap_threshold() -> bool:
    """Keep glibc's malloc from raising its mmap threshold: freed large blocks go back to the system.

    glibc serves a block of 128 KiB or more with its own mapping, unmapped when freed; but the first
    time such a block is freed it raises that threshold to the block's size (up to 32 MiB), so later
    blocks of that size come from the heap and their memory stays with the process after they are
    freed. Whether and when a start-up frees one is a matter of timing: the same worker kept 186 MB
    or 224 MB after start (one extra mapping of 25-38 MB). Setting the threshold explicitly turns the
    adjustment off; the workers, forked from the master, inherit it. Returns whether it was set: not
    with another C library, nor when the operator set the threshold (``MALLOC_MMAP_THRESHOLD_`` or
    ``GLIBC_TUNABLES``).
    """
    if "MALLOC_MMAP_THRESHOLD_" in os.environ or "mmap_threshold" in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return False
    if not hasattr(libc, "gnu_get_libc_version"):  # not glibc (musl has a mallopt that does nothing)
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))


def prepare_metrics_directory(state_dir: Path) -> Path:
    """Point prometheus-client's multiprocess mode at ``<state_dir>/metrics`` (or the operator's directory), emptied.

    Set before the master starts (prometheus-client reads it on import), so every worker writes its
    values there and one scrape of any worker can sum them all. The directory is emptied because
    files left by a previous server would be counted again.
    """
    directory = Path(os.environ.get(METRICS_ENVIRONMENT) or state_dir / "metrics").resolve()
    directory.mkdir(parents=True, exist_ok=True)
    for leftover in directory.iterdir():
        if leftover.is_file() and leftover.suffix in {".db", ".json"}:
            leftover.unlink()
    os.environ[METRICS_ENVIRONMENT] = str(directory)
    return directory


def _metrics_child_exit(server: Any, worker: Any) -> None:
    """Gunicorn's ``child_exit``: drop a dead worker's live gauges from the multiprocess directory."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]


def _forget_kernel_modules() -> None:
    """Drop the kernel's modules inherited from the master, so this worker imports the code installed now."""
    for name in list(sys.modules):
        if name == "botcriptofy" or name.startswith("botcriptofy."):
            del sys.modules[name]


class Application(BaseApplication):  # type: ignore[misc]
    def __init__(self, options: dict[str, Any], state_dir: Path) -> None:
        self.options = options
        self.state_dir = state_dir
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)
        if os.environ.get(METRICS_ENVIRONMENT):
            self.cfg.set("child_exit", _metrics_child_exit)

    def load(self) -> Any:
        _forget_kernel_modules()
        from botcriptofy._serve import app_from_environment  # the module as installed now

        return app_from_environment()

    def run(self) -> None:
        try:
            RollingArbiter(self).run()
        except RuntimeError as error:
            print(f"\nError: {error}\n", file=sys.stderr)
            sys.exit(1)


class RollingArbiter(Arbiter):  # type: ignore[misc]
    """Gunicorn's master, with ``SIGHUP`` replacing the workers one at a time instead of all at once."""

    READY_TIMEOUT = 120.0

    def __init__(self, app: Application) -> None:
        super().__init__(app)
        self.state_dir = app.state_dir
        self.roll: deque[int] | None = None
        self.newcomer: int | None = None
        self.deadline = 0.0
        self.status: dict[str, Any] = {"number": 0, "state": "idle"}
        previous = _read_json(self.state_dir / RESTART_STATUS)
        if previous:
            self.status["number"] = int(previous.get("number", 0))

    def handle_hup(self) -> None:
        if self.roll is not None:
            self.log.info("rolling restart already in progress; SIGHUP ignored")
            return
        old = [pid for pid, _ in sorted(self.WORKERS.items(), key=lambda item: item[1].age)]
        self.log.info("rolling restart: replacing %s worker(s) one at a time", len(old))
        self.roll = deque(old)
        self.newcomer = None
        self._write_status(
            number=self.status["number"] + 1, state="rolling", total=len(old), replaced=0, reason=None, started_at=time.time()
        )

    def manage_workers(self) -> None:
        if self.roll is None:
            super().manage_workers()
            return
        self._advance()

    def _advance(self) -> None:
        assert self.roll is not None
        while self.roll and self.roll[0] not in self.WORKERS:
            self.roll.popleft()  # an old worker that exited on its own needs no replacing
        if self.newcomer is None:
            if not self.roll:
                self.log.info("rolling restart done: %s worker(s) replaced", self.status.get("replaced", 0))
                self._finish("done")
                return
            self.newcomer = self.spawn_worker()
            self.deadline = time.monotonic() + self.READY_TIMEOUT
            return
        if self.newcomer not in self.WORKERS:
            self._fail(f"the new worker {self.newcomer} exited before it was ready; see its log above")
            return
        described = _read_json(self.state_dir / "workers" / f"{self.newcomer}.json")
        if described and described.get("ready"):
            old = self.roll.popleft()
            self.log.info("worker %s is ready; stopping worker %s gracefully", self.newcomer, old)
            self.kill_worker(old, signal.SIGTERM)
            self.newcomer = None
            self._write_status(replaced=self.status.get("replaced", 0) + 1)
            return
        if time.monotonic() > self.deadline:
            not_started = (described or {}).get("not_started") or {}
            detail = "; ".join(f"{name}: {reason}" for name, reason in not_started.items()) or "it did not start"
            self.kill_worker(self.newcomer, signal.SIGTERM)
            self._fail(f"the new worker {self.newcomer} was not ready within {self.READY_TIMEOUT:.0f} s ({detail})")

    def _fail(self, reason: str) -> None:
        self.log.error("rolling restart stopped, the remaining old workers keep serving: %s", reason)
        self._finish("failed", reason)

    def _finish(self, state: str, reason: str | None = None) -> None:
        self.roll = None
        self.newcomer = None
        self._write_status(state=state, reason=reason, finished_at=time.time())
        super().manage_workers()

    def _write_status(self, **changes: Any) -> None:
        self.status.update(changes)
        path = self.state_dir / RESTART_STATUS
        try:
            fd, temporary = tempfile.mkstemp(dir=self.state_dir, prefix=".restart.", suffix=".tmp")
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(self.status, handle)
            os.replace(temporary, path)
        except OSError:
            self.log.exception("cannot write %s", path)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) else None


def read_restart_status(state_dir: Path) -> dict[str, Any]:
    """The master's last rolling restart: ``number``, ``state`` (rolling, done, failed), ``reason``."""
    return _read_json(Path(state_dir) / RESTART_STATUS) or {"number": 0, "state": "idle"}


def app_from_environment() -> Any:
    """The ASGI app of one worker: a runtime over ``BOTCRIPTOFY_SETTINGS_DIR`` and ``BOTCRIPTOFY_ENV``."""
    import logging

    from ._app import Runtime

    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    return Runtime(os.environ.get("BOTCRIPTOFY_SETTINGS_DIR"), env=os.environ.get("BOTCRIPTOFY_ENV"))


def main() -> None:
    """Run the master that ``serve`` prepared (options in the ``_BOTCRIPTOFY_SERVE`` environment variable)."""
    prepared = json.loads(os.environ[SERVE_ENVIRONMENT])
    fix_mmap_threshold()
    Application(prepared["options"], Path(prepared["state_dir"])).run()
