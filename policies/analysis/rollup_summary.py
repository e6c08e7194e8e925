"""From stored history to the summaries ``policies.analysis.recommendations.recommend`` judges. Pure.

- ``service_summaries``: per-minute ``MetricRollup`` rows of a window (plus instances and
  utilisation per service) -> ``ServiceSummary``; latency quantiles from the merged sketches,
  the error rate from outcome counts that count against the service, average concurrency as the
  time average over the window's minutes (a minute without a rollup had no calls: 0).
- ``service_series``: the same numbers per time bucket, for the report's charts.
- ``message_summaries``: per-topic traffic -> ``MessagePatternSummary``.
- ``database_summaries``: infrastructure findings (``infrastructure_error`` messages) ->
  ``DatabaseSummary`` with the worst figures reported in the window.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

import pandas as pd

from policies.analysis.baselines import sketch_from_counts
from policies.analysis.summaries import DatabaseSummary, MessagePatternSummary, ServiceSummary
from policies.breaker.latency_sketch import LatencySketch
from policies.metrics.sketch_codec import decode_sketch
from protocol.errors import counts_against_service


class MetricRollup(Protocol):
    """What is read of a rollup (``adapters.store.MetricRollup`` has it; policies import no adapters)."""

    @property
    def service(self) -> str: ...
    @property
    def minute(self) -> float: ...
    @property
    def calls(self) -> int: ...
    @property
    def outcomes(self) -> dict[str, int]: ...
    @property
    def latency_sketch(self) -> bytes: ...
    @property
    def concurrency_max(self) -> int: ...
    @property
    def concurrency_avg(self) -> float: ...


DB_COMPONENTS = {"postgresql_cluster": "postgresql", "mongodb_cluster": "mongodb", "redis": "redis"}


def failures_of(outcomes: Mapping[str, int]) -> int:
    """Calls of an outcome map (code -> count, "ok" for successes) that count against the service."""
    total = 0
    for code, n in outcomes.items():
        if code != "ok" and counts_against_service(int(code)):
            total += int(n)
    return total


def service_summaries(
    rollups: Iterable[MetricRollup], resources: Mapping[str, Mapping[str, Any]], *, start: float, end: float
) -> list[ServiceSummary]:
    """One summary per service with rollups in ``[start, end)``."""
    window_s = end - start
    minutes = max(window_s / 60.0, 1.0)
    acc: dict[str, dict[str, Any]] = {}
    for r in rollups:
        if not start <= r.minute < end:
            continue
        a = acc.setdefault(r.service, {"calls": 0, "failures": 0, "conc": 0.0, "peak": 0, "sketch": None})
        a["calls"] += r.calls
        a["failures"] += failures_of(r.outcomes)
        a["conc"] += r.concurrency_avg
        a["peak"] = max(a["peak"], r.concurrency_max)
        decoded = decode_sketch(r.latency_sketch)
        if a["sketch"] is None:
            a["sketch"] = decoded
        else:
            a["sketch"].merge(decoded)
    out = []
    for name, a in sorted(acc.items()):
        sk: LatencySketch = a["sketch"]
        res = resources.get(name, {})
        out.append(ServiceSummary(
            service=name, window_s=window_s, calls=a["calls"],
            p50_ms=_ms(sk.quantile(0.5)), p95_ms=_ms(sk.quantile(0.95)), p99_ms=_ms(sk.quantile(0.99)),
            error_rate=a["failures"] / a["calls"] if a["calls"] else 0.0,
            avg_concurrency=round(a["conc"] / minutes, 3), peak_concurrency=float(a["peak"]),
            instances=int(res.get("instances", 1)),
            cpu_utilisation=res.get("cpuUtilisation"), mem_utilisation=res.get("memUtilisation"),
        ))
    return out


def _ms(seconds: float | None) -> float:
    return 0.0 if seconds is None else round(seconds * 1000.0, 3)


def service_series(
    rollups: Iterable[MetricRollup], services: Sequence[str], *, start: float, end: float, buckets: int
) -> dict[str, dict[str, list[tuple[float, float]]]]:
    """Per service and per time bucket (its start): p50/p95/p99 ms, error rate %, calls per
    second and average concurrency."""
    width = (end - start) / buckets
    wanted = set(services)
    acc: dict[tuple[str, int], dict[str, Any]] = defaultdict(lambda: {"calls": 0, "failures": 0, "conc": 0.0,
                                                                       "sketch": LatencySketch()})
    for r in rollups:
        if r.service not in wanted or not start <= r.minute < end:
            continue
        a = acc[(r.service, int((r.minute - start) // width))]
        a["calls"] += r.calls
        a["failures"] += failures_of(r.outcomes)
        a["conc"] += r.concurrency_avg
        a["sketch"].merge(decode_sketch(r.latency_sketch))
    out: dict[str, dict[str, list[tuple[float, float]]]] = {}
    per_bucket_minutes = width / 60.0
    for name in services:
        s: dict[str, list[tuple[float, float]]] = defaultdict(list)
        for b in range(buckets):
            got = acc.get((name, b))
            if got is None:
                continue
            t = start + b * width
            for q, key in ((0.5, "p50"), (0.95, "p95"), (0.99, "p99")):
                s[key].append((t, _ms(got["sketch"].quantile(q))))
            s["errorRate"].append((t, 100.0 * got["failures"] / got["calls"] if got["calls"] else 0.0))
            s["callsPerSecond"].append((t, got["calls"] / width))
            s["concurrency"].append((t, got["conc"] / per_bucket_minutes))
        out[name] = dict(s)
    return out


def message_summaries(publishers: pd.DataFrame, sizes: pd.DataFrame, window_s: float) -> list[MessagePatternSummary]:
    """Per topic ``service/{name}``: messages, its busiest publisher, payload p95 (bytes)."""
    out = []
    for service, frame in publishers.groupby("service"):
        top = frame.sort_values(["n", "user"], ascending=[False, True]).iloc[0]
        sz = sizes[sizes["service"] == service]
        p95 = sketch_from_counts(sz["key"].to_numpy(), sz["n"].to_numpy()).quantile(0.95)
        out.append(MessagePatternSummary(
            topic=f"service/{service}", window_s=window_s, messages=int(frame["n"].sum()),
            payload_bytes_p95=None if p95 is None else round(p95 * 1000.0),
            top_publisher=str(top["user"]), top_publisher_messages=int(top["n"]),
        ))
    return out


def database_summaries(findings: Iterable[Mapping[str, Any]], window_s: float) -> list[DatabaseSummary]:
    """The worst replication lag and connection use each database reported in the window."""
    worst: dict[str, dict[str, Any]] = {}
    for msg in findings:
        kind = DB_COMPONENTS.get(str(msg.get("component")))
        if kind is None:
            continue
        details = msg.get("details") or {}
        targets = details.get("targets") or {"": details}
        for label, t in targets.items():
            if not isinstance(t, Mapping):
                continue
            name = f"{msg['component']}/{label}" if label else str(msg["component"])
            w = worst.setdefault(name, {"kind": kind, "lag": None, "conn": None, "max": None})
            lags = [float(r["replayLagSeconds"]) for r in t.get("replicas") or ()
                    if isinstance(r, Mapping) and r.get("replayLagSeconds") is not None]
            conn, cap = t.get("connections"), t.get("maxConnections")
            rs = t.get("replicaSet")  # mongodb_cluster: the set's worst lag; connections of serverStatus
            if isinstance(rs, Mapping) and isinstance(rs.get("maxLagSeconds"), int | float):
                lags.append(float(rs["maxLagSeconds"]))
            if isinstance(conn, Mapping):
                current, available = conn.get("current"), conn.get("available")
                if isinstance(current, int) and isinstance(available, int):
                    conn, cap = current, current + available
                else:
                    conn, cap = None, None
            if lags:
                w["lag"] = max(lags + ([w["lag"]] if w["lag"] is not None else []))
            if conn is not None and cap and (w["conn"] is None or conn / cap > w["conn"] / w["max"]):
                w["conn"], w["max"] = int(conn), int(cap)
    return [DatabaseSummary(name=n, kind=w["kind"], window_s=window_s, replication_lag_s=w["lag"],
                            connections=w["conn"], max_connections=w["max"]) for n, w in sorted(worst.items())]
