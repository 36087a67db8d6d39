"""Where the running service lives: ``kernel.stash[SERVICE]``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from botcriptofy import ProblemError, StashKey

if TYPE_CHECKING:
    from botcriptofy import Kernel

    from ._service import BackupService

SERVICE: StashKey[BackupService] = StashKey("backup.service")


def service_of(kernel: Kernel) -> BackupService:
    try:
        return kernel.current().stash[SERVICE]
    except KeyError:
        raise ProblemError(503, "Backups unavailable", "The backup plugin is not running.") from None
