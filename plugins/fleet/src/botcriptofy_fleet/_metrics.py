"""Prometheus gauges of this worker's place in the fleet: version served, drift, refused versions, LISTEN connection."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from ._state import FleetState


class FleetCollector(Collector):
    def __init__(self, state: FleetState) -> None:
        self.state = state

    def collect(self) -> Iterator[GaugeMetricFamily]:
        store = self.state.store
        if store is None:
            return
        report = store.last_report
        yield GaugeMetricFamily(
            "botcriptofy_fleet_config_version",
            "The fleet configuration version this worker serves.",
            value=report.get("config_version") or 0,
        )
        yield GaugeMetricFamily(
            "botcriptofy_fleet_config_drift",
            "1 when this host's settings.toml differs from the fleet's version (reported, never applied).",
            value=1 if report.get("drift") else 0,
        )
        yield GaugeMetricFamily(
            "botcriptofy_fleet_refused_versions",
            "Fleet versions this host refused (it serves its previous one).",
            value=len(report.get("refused_versions") or {}),
        )
        yield GaugeMetricFamily(
            "botcriptofy_fleet_store_connected",
            "1 while the LISTEN connection to the fleet's store is up.",
            value=1 if store.listening else 0,
        )
