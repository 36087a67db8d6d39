"""BotCriptoFy cache plugin: hook implementations only; the logic lives in the private modules.

Other plugins reach the cache through ``kernel.cache()``; see :class:`CacheService` (and the
plugin's README) for the methods beyond :class:`botcriptofy.Cache`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from botcriptofy import DataSubject, HealthCheck, SettingsSchema, StashKey, hookimpl

from ._metrics import CacheCollector
from ._service import CacheService, NoWriterError, PendingWrite, Writer
from ._settings import LIVE_KEYS, CacheSettings, NamespaceSettings
from ._stats import Stats

if TYPE_CHECKING:
    from botcriptofy import Kernel

__all__ = [
    "CacheService",
    "CacheSettings",
    "NamespaceSettings",
    "NoWriterError",
    "PendingWrite",
    "Writer",
    "cache_backend",
    "erase_subject_data",
    "export_subject_data",
    "health_checks",
    "plugin_settings_schema",
    "register_metrics",
    "settings_changed",
    "shutdown",
    "startup",
]


@dataclass
class _State:
    """What outlives one cache instance (kept in the stash, copied into every generation)."""

    stats: Stats = field(default_factory=Stats)
    writers: dict[str, Writer] = field(default_factory=dict)
    service: CacheService | None = None


STATE: StashKey[_State] = StashKey("cache.state")
SERVICE: StashKey[CacheService] = StashKey("cache.service")


def _state(kernel: Kernel) -> _State:
    return kernel.stash.setdefault(STATE, _State())


@hookimpl
def plugin_settings_schema() -> SettingsSchema:
    return SettingsSchema(CacheSettings, live=LIVE_KEYS, guarded=frozenset({"redis_url"}))


@hookimpl(tryfirst=True)
async def startup(kernel: Kernel) -> None:
    """Start first, so plugins starting after it find the cache (and can register writers) in ``kernel.cache()``."""
    state = _state(kernel)
    service = CacheService(kernel.settings_for("cache"), stats=state.stats, writers=state.writers)
    await service.start()
    state.service = service
    kernel.stash[SERVICE] = service


@hookimpl
async def shutdown(kernel: Kernel) -> None:
    service = kernel.stash.get(SERVICE, None)
    if service is not None:
        await service.close()


@hookimpl
def settings_changed(kernel: Kernel, previous: Any, current: CacheSettings, changed: frozenset[str]) -> None:
    service = kernel.stash.get(SERVICE, None)
    if service is not None:
        service.reconfigure(current)


@hookimpl
def cache_backend(kernel: Kernel) -> CacheService | None:
    return kernel.stash.get(SERVICE, None)


@hookimpl
def health_checks(kernel: Kernel) -> list[HealthCheck] | None:
    service = kernel.stash.get(SERVICE, None)
    if service is None or service.backend == "memory":
        return None
    return [HealthCheck("redis", service.ping, timeout=max(1.0, service.settings.redis_timeout * 4))]


@hookimpl
def register_metrics(kernel: Kernel) -> list[Any]:
    state = _state(kernel)
    return [CacheCollector(state.stats, lambda: state.service)]


@hookimpl
def export_subject_data(kernel: Kernel, subject: DataSubject) -> dict[str, Any] | None:
    from ._privacy import export

    return export(kernel, subject)


@hookimpl
async def erase_subject_data(kernel: Kernel, subject: DataSubject) -> dict[str, Any] | None:
    from ._privacy import erase

    return await erase(kernel.stash.get(SERVICE, None), subject)
