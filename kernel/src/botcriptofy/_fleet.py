"""Fleet mode: the contract of a shared configuration store (the ``config_store`` hook).

With no store the runtime keeps today's single-host behaviour: the settings files of this host are
the configuration, and ``<state_dir>/config-history.sqlite3`` its history. When an enabled plugin
provides a store, the store's current version is the configuration of every host: each worker
applies it (the store wakes it up, and it reconciles periodically), every change made through the
API or the command line becomes a version of the store after one validation, and an edit of this
host's shared files that is not the store's version is reported as drift, never applied.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

#: The settings files a fleet version carries. ``settings.local.toml`` (host addresses, the host's
#: name) and ``.secrets.toml`` stay on each host and are never stored in the shared history.
SHARED_FILES = ("settings.toml",)


def shared_files(files: Mapping[str, str]) -> dict[str, str]:
    """The part of a configuration's files that the fleet shares."""
    return {name: text for name, text in files.items() if name in SHARED_FILES}


def shared_digest(files: Mapping[str, str]) -> str:
    """Hash of the shared files (what a fleet version is compared by)."""
    return hashlib.sha256(json.dumps(shared_files(files), sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class SharedVersion:
    """One configuration version of the fleet: the shared files, who made it, when, from where, and the masked diff."""

    version: int
    files: dict[str, str]
    created_at: str = ""
    source: str = ""
    actor: str = ""
    note: str = ""
    diff: dict[str, Any] = field(default_factory=dict)

    @property
    def digest(self) -> str:
        return shared_digest(self.files)

    def summary(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "applied_at": self.created_at,
            "source": self.source,
            "actor": self.actor,
            "note": self.note,
            "diff": self.diff,
        }


@runtime_checkable
class ConfigStore(Protocol):
    """Where the fleet's configuration versions live (the ``config_store`` hook), shared by every host.

    ``publish`` is called only with files the caller validated; the store numbers the version,
    stores it (never a secret: ``settings`` is masked, the files are the shared ones) and tells
    every subscriber. ``reconcile_interval`` is how often the runtime asks for the current version
    even when no notification came.
    """

    reconcile_interval: float

    async def current(self) -> SharedVersion | None:
        """The fleet's current version, or None while it has none."""
        ...

    async def get(self, version: int) -> SharedVersion | None:
        """A version by number."""
        ...

    async def history(self, limit: int) -> list[SharedVersion]:
        """The newest versions first."""
        ...

    async def publish(
        self, files: Mapping[str, str], *, settings: Mapping[str, Any], source: str, actor: str, note: str = "", first: bool = False
    ) -> SharedVersion:
        """Make ``files`` the fleet's current version and wake every subscriber; return it.

        With ``first`` the files become version 1 only if the fleet has no version yet; otherwise the
        current version is returned unchanged (hosts starting together agree on one first version).
        """
        ...

    def subscribe(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (from the event loop) whenever the current version may have changed, or the store reconnected."""
        ...

    async def heartbeat(self, report: Mapping[str, Any]) -> None:
        """Record this worker's state (host, pid, config version, plugins, refusals, drift) with the time."""
        ...

    async def status(self) -> dict[str, Any]:
        """The fleet: current version and every host and worker whose heartbeat has not timed out."""
        ...
