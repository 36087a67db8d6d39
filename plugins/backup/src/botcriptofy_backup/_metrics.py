"""Prometheus collectors of the backup plugin, created once per plugin object."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import Counter, Gauge

LAST_SUCCESS = "botcriptofy_backup_last_success_timestamp_seconds"
FAILURES = "botcriptofy_backup_failures"


@dataclass
class BackupMetrics:
    last_success: Gauge = field(
        default_factory=lambda: Gauge(LAST_SUCCESS, "Unix time of the last successful backup, by database.", ["database"], registry=None)
    )
    failures: Counter = field(default_factory=lambda: Counter(FAILURES, "Backups that failed, by database.", ["database"], registry=None))
    duration: Gauge = field(
        default_factory=lambda: Gauge(
            "botcriptofy_backup_last_duration_seconds", "Seconds the last successful backup took, by database.", ["database"], registry=None
        )
    )
    size: Gauge = field(
        default_factory=lambda: Gauge(
            "botcriptofy_backup_last_size_bytes",
            "Bytes the last successful backup added to its repository, by database.",
            ["database"],
            registry=None,
        )
    )
    drill_rto: Gauge = field(
        default_factory=lambda: Gauge(
            "botcriptofy_backup_drill_rto_seconds",
            "Seconds the last restore drill took to bring the database back, by database.",
            ["database"],
            registry=None,
        )
    )

    def collectors(self) -> list[Gauge | Counter]:
        return [self.last_success, self.failures, self.duration, self.size, self.drill_rto]
