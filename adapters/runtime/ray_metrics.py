"""sfa-ops' series on Ray's own metrics export (``ray.util.metrics``), so they appear on each
node's metrics endpoint and the Ray dashboard (Ray names them ``ray_<name>``; counters ``…_total``).

Two exporters, each called once per tick by the actor that holds the data (never per message):

- :class:`RayFamilyExporter` (the supervisor): every gauge and counter family of
  ``policies.supervision.status_view.metric_families`` — a gauge is set, a counter is increased by what it grew
  since the last export (``policies.metrics.series.CounterIncrements``).
- :class:`RayCallHistogram` (a service monitor): ``sfa_ops_call_duration_seconds`` from the tick's
  answered-call durations. Ray's ``Histogram`` has no bulk record, so this is one ``observe`` per
  answered call inside the per-tick loop (~2.4 µs each on this machine).

Ray keeps a gauge's last value for as long as the process lives: a retired service's gauges stay
at their last value there (operate's own ``/metrics`` drops them).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from ray.util import metrics

from policies.metrics.calls import BUCKETS
from policies.metrics.series import CALL_DURATION, CounterIncrements
from policies.supervision.status_view import Family

logger = logging.getLogger("sfa_ops.ray_metrics")


class RayFamilyExporter:
    """Pushes gauge and counter families to ``ray.util.metrics`` (histograms are skipped: they
    are recorded by :class:`RayCallHistogram` where the raw durations are)."""

    def __init__(self) -> None:
        self._metrics: dict[str, tuple[Any, tuple[str, ...]]] = {}
        self._increments = CounterIncrements()

    def _metric(self, family: Family) -> tuple[Any, tuple[str, ...]]:
        got = self._metrics.get(family.name)
        if got is None:
            keys = tuple(sorted({k for s in family.samples for k, _ in s.labels}))
            cls = metrics.Counter if family.kind == "counter" else metrics.Gauge
            got = self._metrics[family.name] = (cls(family.name, family.help, tag_keys=keys), keys)
        return got

    def export(self, families: Iterable[Family]) -> int:
        """Record one round of families; returns how many samples were recorded."""
        recorded = 0
        wanted = [f for f in families if f.kind in ("gauge", "counter")]
        increments = self._increments.update(f for f in wanted if f.kind == "counter")
        for family in wanted:
            if not family.samples:
                continue
            metric, keys = self._metric(family)
            for sample in family.samples:
                labels = dict(sample.labels)
                tags = {k: labels.get(k, "") for k in keys}
                if family.kind == "gauge":
                    metric.set(sample.value, tags)
                else:
                    inc = increments.get((family.name, sample.labels), 0.0)
                    if inc <= 0:
                        continue
                    metric.inc(inc, tags)
                recorded += 1
        return recorded


class RayCallHistogram:
    """One service's ``sfa_ops_call_duration_seconds`` on Ray (same buckets as ``/metrics``)."""

    def __init__(self, *, cluster: str, service: str) -> None:
        self._tags = {"cluster": cluster, "service": service}
        self._histogram = metrics.Histogram(CALL_DURATION, "duration of answered calls, seconds",
                                            boundaries=list(BUCKETS), tag_keys=("cluster", "service"))

    def observe(self, durations: Iterable[float]) -> None:
        observe, tags = self._histogram.observe, self._tags
        for d in durations:
            observe(d, tags)
