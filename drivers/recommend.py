"""``python -m drivers.recommend`` — performance recommendations over a recent window.

The seed's PerformanceAnalyzer (high latency, high error rate, scaling with an optimal instance
count) plus resource utilisation, message patterns (hot topics, chatty clients, oversized
payloads) and database performance (from the infrastructure checks), ordered by impact, each
with the evidence behind it. Service figures come from the per-minute metric rollups; message
patterns from the audit log's calls, read in time partitions by Ray tasks; database figures from
the infrastructure findings. Thresholds: policies/recommendations.yaml (override with --policies).

Writes recommendations-<time>.md, .html (charts: latency percentiles, error rate and concurrency
vs capacity over time per flagged service) and .json under --out (default ./var/reports/).
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from adapters.reports.render import Chart, Report, Section, Table, write_report
from adapters.store import StoreError, redact_url
from adapters.store.analysis import audit_hour_counts, require_shared
from drivers.analysis_cli import (
    REPORTS_DIR,
    Summary,
    duration,
    ensure_ray,
    iso,
    job_main,
    open_checked,
    parse_time,
)
from drivers.analysis_tasks import CALL_KIND, MessagePartials, fold_messages, message_partials, run_partitions
from drivers.options import LOG_OPTIONS, Option, OptionError, positive_int, seconds
from drivers.progress import Progress
from policies.analysis.baselines import Window, plan_partitions
from policies.analysis.recommendation_settings import load_recommendation_policy
from policies.analysis.recommendations import Recommendation, recommend
from policies.analysis.rollup_summary import (
    database_summaries,
    message_summaries,
    service_series,
    service_summaries,
)
from policies.common.config import PolicyConfigError

PROG = "python -m drivers.recommend"
DESCRIPTION = __doc__.split("\n\n", 1)[1] if __doc__ else ""

OPTIONS = [
    Option("store", "store to read: sqlite:///path.db or postgresql://user@host/db",
           default="sqlite:///var/sfa-ops.db", metavar="URL"),
    Option("window", "how much recent history to judge, ending at --until (e.g. 24h, 7d)", default="24h",
           convert=seconds, metavar="DURATION"),
    Option("until", "end of the window: a date/time (UTC), epoch seconds or 'now'", default="now", metavar="DATE"),
    Option("out", "directory for the report files", default=str(REPORTS_DIR), metavar="DIR"),
    Option("policies", "directory with a recommendations.yaml overriding the defaults", metavar="DIR"),
    Option("points", "points per chart line", default=48, convert=positive_int, metavar="N"),
    Option("partition-rows", "at most this many events per Ray task", default=500_000, convert=positive_int,
           metavar="N"),
    Option("ray-address", "Ray cluster to run on (default: a local Ray started for this run)", metavar="ADDR"),
    Option("quiet", "no progress bar", flag=True),
    *LOG_OPTIONS,
]


async def load(url: str, w: Window) -> dict[str, Any]:
    """Rollups, resources, findings and the partition plan of the window."""
    store = await open_checked(url)
    try:
        try:
            require_shared(store)
        except StoreError as exc:
            raise OptionError(f"--store: {exc}") from exc
        rollups = await store.metrics_query(None, w.start, w.end)
        counts = await audit_hour_counts(store, since=w.start, until=w.end, kinds=(CALL_KIND,))
        findings = await store.outbox_query(kind="tier3", since=w.start, until=w.end, limit=10_000)
        resources = await store.state_list("service_resources")
    finally:
        await store.close()
    if not rollups and not counts:
        raise OptionError(f"--store {redact_url(url)} holds no metric rollups or calls in {iso(w.start)} .. "
                          f"{iso(w.end)}; check --window/--until "
                          "(run python -m drivers.operate on the store, or write a history with python -m drivers.generate)")
    return {"rollups": rollups, "counts": counts, "findings": [f.payload for f in findings],
            "resources": resources}


def run(opts: dict[str, Any]) -> dict[str, Any]:
    """The whole job for resolved options; returns the recommendations and the files written."""
    try:
        until = parse_time(opts["until"])
        w = Window.aligned(until - duration(opts["window"]), until)
    except ValueError as exc:
        raise OptionError(f"--window/--until: {exc}") from exc
    try:
        policy = load_recommendation_policy(opts["policies"])
    except PolicyConfigError as exc:
        raise OptionError(f"--policies: {exc}") from exc
    data = asyncio.run(load(opts["store"], w))
    window_s = w.end - w.start
    summaries = service_summaries(data["rollups"], data["resources"], start=w.start, end=w.end)
    patterns = []
    total = sum(data["counts"].values())
    if total:
        cluster = ensure_ray(opts["ray_address"], logs=opts)
        parts = plan_partitions(data["counts"], w, opts["partition_rows"])
        with Progress(total=total, label="message patterns", unit="calls", enabled=not opts["quiet"]) as bar:
            msgs, _ = run_partitions(message_partials, opts["store"], parts, fold_messages,
                                     on_done=lambda st: bar.advance(st.rows))
        assert isinstance(msgs, MessagePartials)
        patterns = message_summaries(msgs.publishers, msgs.sizes, window_s)
    else:
        cluster = "not used (no calls in the audit log)"
    databases = database_summaries(data["findings"], window_s)
    recs = recommend(summaries, patterns, databases, policy)
    flagged = sorted({r.target for r in recs if r.target in {s.service for s in summaries}})
    series = service_series(data["rollups"], flagged, start=w.start, end=w.end, buckets=opts["points"])
    report = build_report(w, recs, summaries, patterns, databases, series, policy.service.latency_p95 * 1000,
                          policy.service.error_rate, policy.service.concurrency_per_instance)
    stamp = time.strftime("%Y%m%dT%H%M", time.gmtime(w.end))
    paths = write_report(report, Path(opts["out"]), f"recommendations-{stamp}")
    return {"window": w, "recommendations": recs, "paths": paths, "cluster": cluster, "services": len(summaries),
            "topics": len(patterns), "databases": len(databases)}


def build_report(w: Window, recs: list[Recommendation], summaries: Sequence[Any], patterns: Sequence[Any],
                 databases: Sequence[Any], series: dict[str, dict[str, list[tuple[float, float]]]],
                 latency_ms: float, error_pct: float, per_instance: float) -> Report:
    """The report document: the ranked list, each recommendation's evidence, charts, inputs."""
    by_name = {s.service: s for s in summaries}
    sections = [Section(
        title="Recommendations by impact",
        text=[f"{len(recs)} recommendations over {len(summaries)} services, {len(patterns)} topics and "
              f"{len(databases)} databases." if recs else "Nothing to recommend: every figure is within its threshold."],
        tables=[Table(header=("#", "priority", "type", "target", "finding", "impact"),
                      rows=[(i + 1, r.priority.value, r.category.value, r.target, r.description, r.impact)
                            for i, r in enumerate(recs)])],
    )]
    for i, r in enumerate(recs):
        charts: list[Chart] = []
        s = series.get(r.target)
        if s and r.rule in ("high_latency", "high_error_rate", "high_concurrency", "high_utilisation"):
            charts.append(Chart(title=f"{r.target}: latency percentiles", y_label="ms", threshold=latency_ms,
                                threshold_label="p95 limit",
                                series={k: s.get(k, []) for k in ("p50", "p95", "p99")}))
            charts.append(Chart(title=f"{r.target}: error rate", y_label="%", threshold=error_pct,
                                threshold_label="limit", series={"errors %": s.get("errorRate", [])}))
            inst = by_name[r.target].instances if r.target in by_name else 1
            charts.append(Chart(title=f"{r.target}: concurrency vs capacity", y_label="concurrent calls",
                                threshold=inst * per_instance, threshold_label=f"capacity ({inst} inst.)",
                                series={"concurrency": s.get("concurrency", []),
                                        "calls/s": s.get("callsPerSecond", [])}))
        sections.append(Section(
            title=f"{i + 1}. {r.title}: {r.target} ({r.priority.value})",
            text=[r.description, "Suggestions: " + "; ".join(r.suggestions)],
            tables=[Table(header=("evidence", "value"), rows=sorted(r.evidence.items()))],
            charts=charts,
        ))
    sections.append(Section(title="Services in the window", tables=[Table(
        header=("service", "calls", "p50 ms", "p95 ms", "p99 ms", "error rate %", "avg concurrency", "instances"),
        rows=[(s.service, s.calls, s.p50_ms, s.p95_ms, s.p99_ms, round(s.error_rate * 100, 3), s.avg_concurrency,
               s.instances) for s in summaries])],
        charts=[Chart(title="p95 latency by service", kind="bar", y_label="ms", threshold=latency_ms,
                      threshold_label="p95 limit", bars=[(s.service, s.p95_ms) for s in summaries])]))
    sections.append(Section(title="Message patterns", tables=[Table(
        header=("topic", "messages", "payload p95 bytes", "top publisher", "its messages"),
        rows=[(m.topic, m.messages, m.payload_bytes_p95, m.top_publisher, m.top_publisher_messages)
              for m in sorted(patterns, key=lambda m: -m.messages)])]))
    sections.append(Section(title="Databases (infrastructure checks)", tables=[Table(
        header=("database", "kind", "replication lag s", "connections", "max connections"),
        rows=[(d.name, d.kind, d.replication_lag_s, d.connections, d.max_connections) for d in databases])]))
    data = {"window": {"start": iso(w.start), "end": iso(w.end)},
            "recommendations": [r.to_wire() for r in recs],
            "services": [vars(s) for s in summaries], "topics": [vars(m) for m in patterns],
            "databases": [vars(d) for d in databases], "series": series}
    return Report(title="Performance recommendations", subtitle=f"window {iso(w.start)} .. {iso(w.end)}",
                  generated_at=time.time(), sections=sections, data=data)


def _summary(out: dict[str, Any]) -> Summary:
    w: Window = out["window"]
    recs: list[Recommendation] = out["recommendations"]
    rows: list[tuple[str, Any]] = [
        ("window", f"{iso(w.start)} .. {iso(w.end)}"),
        ("inputs", f"{out['services']} services, {out['topics']} topics, {out['databases']} databases"),
        ("ray", out["cluster"]),
        ("recommendations", len(recs)),
    ]
    rows += [(f"  {r.priority.value}", f"{r.target}: {r.title} (impact {r.impact:.2f})") for r in recs[:10]]
    rows += [(f"report ({k})", str(p)) for k, p in out["paths"].items()]
    return "recommendations", rows


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (2 on bad options, an unreachable or empty store)."""
    return job_main(argv, prog=PROG, description=DESCRIPTION, options=OPTIONS, run=run, summary=_summary)


if __name__ == "__main__":
    sys.exit(main())
