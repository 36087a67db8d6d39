"""One scrape for every worker of a host: prometheus-client's multiprocess mode plus worker snapshots.

``botcriptofy serve`` sets ``PROMETHEUS_MULTIPROC_DIR`` before its master starts, so every metric
made with prometheus-client's ``Counter``/``Gauge``/``Histogram`` keeps its value in a file of that
directory, and :class:`~prometheus_client.multiprocess.MultiProcessCollector` sums them.

Custom collectors (this plugin's request series, the kernel state, the process metrics, other
plugins' collectors) keep their values in memory. Each worker therefore writes a snapshot of them,
``snapshot_<pid>.json``, every ``multiprocess_snapshot_seconds`` and when it stops; the worker
answering the scrape writes its own first and merges them all:

- counters, histograms and summaries are summed over every worker that ever wrote one, the dead
  ones included, so a counter never goes backwards when a worker is replaced;
- gauges and other types are reported per live worker, with a ``pid`` label (the dead are dropped).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector

log = logging.getLogger("botcriptofy.observability")

ENVIRONMENT = "PROMETHEUS_MULTIPROC_DIR"
SUMMED = frozenset({"counter", "histogram", "summary"})
PREFIX = "snapshot_"


def directory() -> Path | None:
    """The multiprocess directory, or ``None`` in single-process mode."""
    found = os.environ.get(ENVIRONMENT)
    return Path(found) if found else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _number(value: Any) -> int | float | str:
    """A sample's value as the snapshot stores it: an int or a float, and a non-finite float as its text
    (``nan``, ``inf``, ``-inf``), which orjson would write as null; :func:`_value` reads it back."""
    if type(value) is int:
        return value
    value = float(value)
    return value if math.isfinite(value) else str(value)


def _value(stored: Any) -> float:
    return float(stored) if isinstance(stored, str) else stored  # type: ignore[no-any-return]


def encode(families: Iterable[Metric]) -> list[dict[str, Any]]:
    return [
        {
            "name": family.name,
            "type": family.type,
            "documentation": family.documentation,
            "unit": family.unit,
            "samples": [[s.name, s.labels, _number(s.value)] for s in family.samples if not s.name.endswith("_created")],
        }
        for family in families
    ]


def snapshot_of(registry: Any) -> dict[str, Any]:
    """This process's collected families, as its snapshot file holds them (collected now, on the caller's thread)."""
    return {"pid": os.getpid(), "families": encode(registry.collect())}


def write_snapshot(path: Path, data: dict[str, Any]) -> Path:
    """Write ``data`` (from :func:`snapshot_of`) to ``snapshot_<pid>.json`` in ``path``, atomically.

    Touches no live state, so it may run on a thread: encoding and writing are most of a snapshot's cost
    (a worker with every plugin: about 5,000 samples, 0.5 MB of JSON).
    """
    target = path / f"{PREFIX}{data['pid']}.json"
    fd, temporary = tempfile.mkstemp(dir=path, prefix=".snapshot.", suffix=".tmp")
    try:
        # orjson: 0.4 ms for a worker's 0.5 MB where json.dumps takes 6 ms and json.dump, piece by piece in
        # pure Python, ten times that, on a thread that holds the interpreter lock against the requests.
        try:
            encoded = orjson.dumps(data)
        except TypeError:  # a label or value orjson does not know: the standard encoder's text
            encoded = json.dumps(data, separators=(",", ":")).encode()
        with os.fdopen(fd, "wb") as handle:
            handle.write(encoded)
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    return target


def merge_snapshots(path: Path, skip: set[str], own_pid: int) -> list[Metric]:
    """Merge every snapshot in ``path``; families named in ``skip`` (the multiprocess files') are left out."""
    merged: dict[str, Metric] = {}
    sums: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for file in sorted(path.glob(f"{PREFIX}*.json")):
        try:
            data = orjson.loads(file.read_bytes())
            pid = int(data["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # a snapshot being replaced or damaged: the next scrape reads it
        live = pid == own_pid or _alive(pid)
        for item in data.get("families", ()):
            name, kind = item["name"], item["type"]
            if name in skip:
                continue
            summed = kind in SUMMED
            if not summed and not live:
                continue
            family = merged.get(name)
            if family is None:
                family = merged[name] = Metric(name, item["documentation"], kind, item.get("unit") or "")
                sums[name] = {}
            for sample_name, labels, value in item["samples"]:
                if summed:
                    key = (sample_name, tuple(sorted(labels.items())))
                    sums[name][key] = sums[name].get(key, 0.0) + _value(value)
                else:
                    family.add_sample(sample_name, {**labels, "pid": str(pid)}, _value(value))
    for name, values in sums.items():
        for (sample_name, labels), value in values.items():
            merged[name].add_sample(sample_name, dict(labels), value)
    return list(merged.values())


class HostRegistry:
    """What ``/metrics`` exposes in multiprocess mode: the multiprocess files and every worker's snapshot.

    ``own`` is this worker's snapshot, collected by the caller; collecting this registry reads and
    writes files only, so the scrape can be encoded on a thread.
    """

    def __init__(self, own: dict[str, Any], path: Path) -> None:
        self.own = own
        self.path = path

    def collect(self) -> Iterator[Metric]:
        from_files = list(MultiProcessCollector(None, path=str(self.path)).collect())  # type: ignore[no-untyped-call]
        write_snapshot(self.path, self.own)
        yield from from_files
        yield from merge_snapshots(self.path, {family.name for family in from_files}, os.getpid())


class SnapshotWriter:
    """Writes this worker's snapshot every ``interval`` seconds until stopped, and once more when it stops.

    The collectors are read on the event loop (they are not thread-safe); the snapshot is encoded and
    written on a thread. Done wholly on the loop it stalled every request of the worker for 25-35 ms each
    second under load (bench/request_path_http.py's open loop, py-spy).
    """

    def __init__(self, registry: Any, path: Path, interval: float) -> None:
        self.registry = registry
        self.path = path
        self.interval = interval
        self.users = 0
        self._stopping = False
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="botcriptofy-observability-snapshots")

    async def _run(self) -> None:
        while not self._stopping:
            await self._write()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval):
                    await self._wake.wait()
            self._wake.clear()

    async def _write(self) -> None:
        try:
            data = snapshot_of(self.registry)  # on the loop: the collectors are not thread-safe
            await asyncio.to_thread(write_snapshot, self.path, data)
        except Exception:
            log.exception("cannot write the metrics snapshot to %s", self.path)

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            await self._task
            self._task = None
        await self._write()
