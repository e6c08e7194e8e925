"""``python -m drivers.baselines`` — learn per-user and per-service baselines from the audit log.

Per user: requests per hour (mean, standard deviation, percentiles, and by hour of week), typical
services, records accessed per day, active hours. Per service: p50/p95/p99 latency, error rate
and request rate by hour of week. The window is the whole hours in [--until - --since, --until).

The log is read in hour-aligned time partitions of at most --partition-rows events, each by a
Ray task with pandas; the tasks' partial aggregates (counts, sums, sums of squares, latency
sketch buckets) are summed, never averaged, so the result does not depend on the partitioning.
The baselines are written back as new versions of kinds ``user_activity`` and
``service_performance`` (shapes in docs/analysis.md); the security analyst and the health
policies read the latest version.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Sequence
from typing import Any

from adapters.store import StoreError, redact_url
from adapters.store.analysis import audit_hour_counts, require_shared
from drivers.analysis_cli import Summary, duration, ensure_ray, iso, job_main, open_checked, parse_time
from drivers.analysis_tasks import ACCESS_KIND, CALL_KIND, baseline_partials, fold_partials, run_partitions
from drivers.options import (
    LOG_OPTIONS,
    Option,
    OptionError,
    positive_int,
    seconds,
)
from drivers.progress import Progress
from policies.analysis.baselines import (
    SERVICE_KIND,
    USER_KIND,
    Window,
    empty_partials,
    finalize,
    plan_partitions,
)

PROG = "python -m drivers.baselines"
DESCRIPTION = __doc__.split("\n\n", 1)[1] if __doc__ else ""

OPTIONS = [
    Option("store", "store to read and write: sqlite:///path.db or postgresql://user@host/db",
           default="sqlite:///var/sfa-ops.db", metavar="URL"),
    Option("since", "how much history to learn from, ending at --until (e.g. 30d, 12h)", default="30d",
           convert=seconds, metavar="DURATION"),
    Option("until", "end of the window: a date/time (UTC), epoch seconds or 'now'", default="now", metavar="DATE"),
    Option("partition-rows", "at most this many events per Ray task (bounds each worker's memory)",
           default=500_000, convert=positive_int, metavar="N"),
    Option("ray-address", "Ray cluster to run on (default: a local Ray started for this run)", metavar="ADDR"),
    Option("quiet", "no progress bar", flag=True),
    *LOG_OPTIONS,
]


def window_from(opts: dict[str, Any]) -> Window:
    """The analysis window of resolved options; OptionError when it holds no whole hour."""
    try:
        until = parse_time(opts["until"])
    except ValueError as exc:
        raise OptionError(f"--until {opts['until']!r}: {exc}") from exc
    since = duration(opts["since"])
    if since <= 0:
        raise OptionError(f"--since {opts['since']!r}: must be a positive duration such as 30d")
    try:
        return Window.aligned(until - since, until)
    except ValueError as exc:
        raise OptionError(f"--since/--until: {exc}; widen --since") from exc


async def plan(url: str, window: Window, max_rows: int) -> tuple[list[tuple[float, float]], int]:
    """Partitions of the window and the events they hold; OptionError for an unusable or empty store."""
    store = await open_checked(url)
    try:
        try:
            require_shared(store)
        except StoreError as exc:
            raise OptionError(f"--store: {exc}") from exc
        counts = await audit_hour_counts(store, since=window.start, until=window.end, kinds=(CALL_KIND, ACCESS_KIND))
    finally:
        await store.close()
    total = sum(counts.values())
    if total == 0:
        raise OptionError(
            f"--store {redact_url(url)} holds no call or data-access events in {iso(window.start)} .. "
            f"{iso(window.end)}; check --since/--until "
            "(run python -m drivers.operate on the store, or write a history with python -m drivers.generate)"
        )
    return plan_partitions(counts, window, max_rows), total


async def save(url: str, users: dict[str, Any], services: dict[str, Any]) -> tuple[int, int]:
    """Write both baselines as new versions; returns (user version, service version)."""
    store = await open_checked(url)
    try:
        return await store.baseline_put(USER_KIND, users), await store.baseline_put(SERVICE_KIND, services)
    finally:
        await store.close()


def run(opts: dict[str, Any]) -> dict[str, Any]:
    """The whole job for resolved options; returns what the summary prints."""
    window = window_from(opts)
    url = opts["store"]
    parts, total = asyncio.run(plan(url, window, opts["partition_rows"]))
    cluster = ensure_ray(opts["ray_address"], logs=opts)
    started = time.perf_counter()
    with Progress(total=total, label="baselines", unit="events", enabled=not opts["quiet"]) as bar:
        combined, stats = run_partitions(baseline_partials, url, parts, fold_partials,
                                         on_done=lambda st: bar.advance(st.rows))
    users, services = finalize(combined or empty_partials(), window)
    versions = asyncio.run(save(url, users, services))
    return {"window": window, "events": total, "partitions": len(parts), "stats": stats, "cluster": cluster,
            "users": users, "services": services, "versions": versions,
            "seconds": time.perf_counter() - started}


def _summary(out: dict[str, Any]) -> Summary:
    w: Window = out["window"]
    stats = out["stats"]
    nodes = sorted({s.node_id[:8] for s in stats})
    busiest = sorted(out["users"]["users"].items(), key=lambda kv: -kv[1]["requestsPerHour"])[:3]
    rows = [
        ("window", f"{iso(w.start)} .. {iso(w.end)} ({w.hours} h)"),
        ("events read", f"{out['events']:,} in {out['partitions']} partitions, {out['seconds']:.1f}s"),
        ("ray", f"{out['cluster']}; tasks ran on {len(nodes)} node(s)"),
        ("worker peak RSS", f"{max(s.rss_peak_mb for s in stats):.0f} MiB (largest partition "
                            f"{max(s.rows for s in stats):,} events)"),
        ("users", f"{len(out['users']['users']):,} -> {USER_KIND} v{out['versions'][0]}"),
        ("services", f"{len(out['services']['services']):,} -> {SERVICE_KIND} v{out['versions'][1]}"),
        ("busiest users", ", ".join(f"{u} {d['requestsPerHour']:.1f}/h" for u, d in busiest)),
    ]
    for name, svc in sorted(out["services"]["services"].items())[:12]:
        lat = svc["latencyMs"]
        rows.append((f"  {name}", f"p50 {lat['p50']:.0f} ms, p95 {lat['p95']:.0f} ms, p99 {lat['p99']:.0f} ms, "
                                  f"errors {svc['errorRate']:.2%}, {svc['requestsPerHour']:.1f} req/h"))
    return "baselines", rows


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (2 on bad options, an unreachable or empty store)."""
    return job_main(argv, prog=PROG, description=DESCRIPTION, options=OPTIONS, run=run, summary=_summary)


if __name__ == "__main__":
    sys.exit(main())
