"""A worker's metrics snapshot keeps every value through the file: ints, floats, non-finite floats, float subclasses."""

from __future__ import annotations

import math
import os

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from botcriptofy_observability._multiprocess import encode, merge_snapshots, write_snapshot


class Price(float):
    """A float subclass, as numpy's float64 is: orjson refuses those, the snapshot stores the float."""


def test_values_survive_the_snapshot_and_counters_are_summed(tmp_path):
    gauge = GaugeMetricFamily("levels", "Levels.", labels=["which"])
    for which, value in (("nan", math.nan), ("up", math.inf), ("down", -math.inf), ("price", Price(2.5)), ("count", 7)):
        gauge.add_metric([which], value)
    counter = CounterMetricFamily("calls", "Calls.", labels=["route"])
    counter.add_metric(["/a"], 3)
    own = os.getpid()
    write_snapshot(tmp_path, {"pid": own, "families": encode([gauge, counter])})
    other = CounterMetricFamily("calls", "Calls.", labels=["route"])
    other.add_metric(["/a"], 4.5)
    write_snapshot(tmp_path, {"pid": 2**22 + 12345, "families": encode([other])})  # a dead worker: its counter stays

    merged = {family.name: family for family in merge_snapshots(tmp_path, set(), own)}
    levels = {sample.labels["which"]: sample.value for sample in merged["levels"].samples}
    assert math.isnan(levels.pop("nan"))
    assert levels == {"up": math.inf, "down": -math.inf, "price": 2.5, "count": 7}
    assert {sample.labels["pid"] for sample in merged["levels"].samples} == {str(own)}
    assert [(sample.name, sample.value) for sample in merged["calls"].samples] == [("calls_total", 7.5)]
