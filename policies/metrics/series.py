"""Per-call and per-component series derived from the supervisor's status (pure), added to
``policies.supervision.status_view.metric_families``:

- ``sfa_ops_calls_total{cluster,service,code}``: calls by outcome code (``policies.metrics.calls``);
- ``sfa_ops_call_duration_seconds{cluster,service}``: histogram of answered calls' durations;
- ``sfa_ops_inflight_calls{cluster,service}``: calls awaiting an answer now (summed over observers);
- ``sfa_ops_infrastructure_up{cluster,component}``: 1 while the component's checks are healthy;
- ``sfa_ops_infrastructure_latency_seconds{cluster,component}``: its last check's latency.

The status carries ``calls`` (service → ``CallTotals.snapshot()``) and ``inflight`` (service →
count) beside ``health``. :class:`CounterIncrements` turns cumulative counter samples into the
increments that increment-only exporters (``ray.util.metrics``) need.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Mapping
from typing import Any

from policies.metrics.calls import BUCKETS, read_totals
from policies.supervision.status_view import Family, Sample

CALLS = "sfa_ops_calls"
CALL_DURATION = "sfa_ops_call_duration_seconds"
INFLIGHT = "sfa_ops_inflight_calls"
INFRA_UP = "sfa_ops_infrastructure_up"
INFRA_LATENCY = "sfa_ops_infrastructure_latency_seconds"
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def _le(bound: float) -> str:
    return repr(float(bound))


def call_families(status: Mapping[str, Any], cluster: str) -> list[Family]:
    calls = Family(CALLS, "counter", "calls by outcome: ok, a JSON-RPC error code (-32503: answered by "
                                     "sfa-ops while the breaker was open or the service down), timeout")
    duration = Family(CALL_DURATION, "histogram", "duration of answered calls, seconds")
    for service, data in sorted((status.get("calls") or {}).items()):
        totals = read_totals(data)
        if totals is None:
            continue
        service = str(service)
        for code, n in sorted(totals.codes.items()):
            calls.add(float(n), cluster=cluster, service=service, code=code)
        labels = (("cluster", cluster), ("service", service))
        running = 0
        for bound, n in zip((*BUCKETS, float("inf")), totals.buckets, strict=True):
            running += n
            le = "+Inf" if bound == float("inf") else _le(bound)
            duration.samples.append(Sample((*labels, ("le", le)), float(running), "_bucket"))
        duration.samples.append(Sample(labels, totals.duration_sum, "_sum"))
        duration.samples.append(Sample(labels, float(running), "_count"))
    return [calls, duration]


def inflight_by_service(per_observer: Iterable[Mapping[str, int]], monitored: Container[str]) -> dict[str, int]:
    """Calls in flight per monitored service, summed over the observers' reports."""
    out: dict[str, int] = {}
    for counts in per_observer:
        for service, n in counts.items():
            if service in monitored:
                out[service] = out.get(service, 0) + n
    return out


def inflight_family(status: Mapping[str, Any], cluster: str) -> Family:
    """Every service in the health summary, 0 when nothing of it is in flight."""
    inflight = Family(INFLIGHT, "gauge", "calls awaiting an answer (summed over observers)")
    counts = status.get("inflight") or {}
    services = ((status.get("health") or {}).get("services") or {})
    for service in sorted(set(services) | set(counts)):
        n = counts.get(service, 0)
        inflight.add(float(n) if isinstance(n, int | float) else 0.0, cluster=cluster, service=str(service))
    return inflight


def infrastructure_families(status: Mapping[str, Any], cluster: str) -> list[Family]:
    up = Family(INFRA_UP, "gauge", "1 while the component's checks are healthy, else 0")
    latency = Family(INFRA_LATENCY, "gauge", "latency of the component's last check, seconds")
    for component, entry in sorted(((status.get("health") or {}).get("infrastructure") or {}).items()):
        if not isinstance(entry, Mapping):
            continue
        up.add(1.0 if entry.get("status") == "healthy" else 0.0, cluster=cluster, component=str(component))
        ms = entry.get("latencyMs")
        if isinstance(ms, int | float) and not isinstance(ms, bool):
            latency.add(float(ms) / 1000.0, cluster=cluster, component=str(component))
    return [up, latency]


def series_families(status: Mapping[str, Any], cluster: str) -> list[Family]:
    """The families of this module for one supervisor status."""
    return [*call_families(status, cluster), inflight_family(status, cluster),
            *infrastructure_families(status, cluster)]


def exposition_names(families: Iterable[Family]) -> set[str]:
    """The series names a scrape shows for these families (``_total`` for counters, the
    histogram suffixes), e.g. to check a dashboard's queries against them."""
    names: set[str] = set()
    for f in families:
        if f.kind == "counter":
            names.add(f"{f.name}_total")
        elif f.kind == "histogram":
            names.update(f"{f.name}{s}" for s in HISTOGRAM_SUFFIXES)
        else:
            names.add(f.name)
    return names


class CounterIncrements:
    """Cumulative counter samples → what each grew since the previous round. A sample that went
    down was reset (its source restarted): its whole value is the increment, as Prometheus reads
    it. Only samples of the latest round are remembered (memory follows the live series)."""

    def __init__(self) -> None:
        self._last: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}

    def update(self, families: Iterable[Family]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        seen: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        for f in families:
            if f.kind != "counter":
                continue
            for s in f.samples:
                key = (f.name, s.labels)
                before = self._last.get(key, 0.0)
                grew = s.value - before if s.value >= before else s.value
                if grew > 0:
                    out[key] = grew
                seen[key] = s.value
        self._last = seen
        return out
