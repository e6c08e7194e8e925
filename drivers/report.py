"""``python -m drivers.report gdpr|security --from DATE --to DATE`` — compliance and security reports.

gdpr: processing activities (data accesses by service, collection and operation, with their
classification, lawful basis and retention from policies/compliance.yaml), data-subject requests,
breaches, access-control validation (every access checked against the compliance rules) and
retention compliance. security: incidents, authentication metrics, authorization violations,
behaviour anomalies (the window replayed through the detection rules of policies/security.yaml
with the latest learned baselines) and a vulnerability assessment from the infrastructure
findings. The audit log is read in time partitions by Ray tasks.

Writes <kind>-<from>-<to>.md, .html (with charts) and .json under --out (default ./var/reports/).
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from adapters.reports.render import write_report
from adapters.store import StoreError, redact_url
from adapters.store.analysis import audit_bounds, audit_hour_counts, require_shared
from drivers.analysis_cli import REPORTS_DIR, Summary, ensure_ray, iso, job_main, open_checked, parse_time
from drivers.analysis_tasks import (
    ACTIVITY_BUCKET_S,
    CALL_KIND,
    REPORT_KINDS,
    ReportPartials,
    fold_report,
    report_partials,
    run_partitions,
)
from drivers.options import LOG_OPTIONS, Option, OptionError, positive_int
from drivers.progress import Progress
from drivers.report_sections import gdpr_report, security_report
from policies.analysis.baselines import USER_KIND, Window, plan_partitions, user_baselines
from policies.common.config import PolicyConfigError
from policies.compliance.classification import load_compliance_policy
from policies.security.detection_rules import load_security_policy

PROG = "python -m drivers.report"
KINDS = ("gdpr", "security")
DESCRIPTION = __doc__.split("\n\n", 1)[1] if __doc__ else ""

OPTIONS = [
    Option("store", "store to read: sqlite:///path.db or postgresql://user@host/db",
           default="sqlite:///var/sfa-ops.db", metavar="URL"),
    Option("from", "start of the reporting period: a date/time (UTC) or epoch seconds (required)", metavar="DATE"),
    Option("to", "end of the reporting period (exclusive), same forms (required)", metavar="DATE"),
    Option("out", "directory for the report files", default=str(REPORTS_DIR), metavar="DIR"),
    Option("policies", "directory with compliance.yaml / security.yaml overriding the defaults", metavar="DIR"),
    Option("partition-rows", "at most this many events per Ray task", default=500_000, convert=positive_int,
           metavar="N"),
    Option("ray-address", "Ray cluster to run on (default: a local Ray started for this run)", metavar="ADDR"),
    Option("quiet", "no progress bar", flag=True),
    *LOG_OPTIONS,
]


def period(opts: dict[str, Any]) -> Window:
    """The reporting period (whole hours); OptionError when missing or empty."""
    if not opts["from"] or not opts["to"]:
        raise OptionError("--from and --to are required, e.g. --from 2024-02-01 --to 2024-03-01")
    try:
        start, end = parse_time(opts["from"]), parse_time(opts["to"])
    except ValueError as exc:
        raise OptionError(f"--from/--to: {exc}") from exc
    if end <= start:
        raise OptionError(f"--to ({opts['to']}) must be after --from ({opts['from']})")
    try:
        return Window.aligned(start, end)
    except ValueError as exc:
        raise OptionError(f"--from/--to: {exc}") from exc


async def load(url: str, w: Window) -> dict[str, Any]:
    """Everything but the audit partitions: plan, incidents, findings, baselines, log bounds."""
    store = await open_checked(url)
    try:
        try:
            require_shared(store)
        except StoreError as exc:
            raise OptionError(f"--store: {exc}") from exc
        counts = await audit_hour_counts(store, since=w.start, until=w.end, kinds=(*REPORT_KINDS, CALL_KIND))
        incidents = await store.incidents_query(since=w.start, until=w.end, limit=100_000)
        findings = await store.outbox_query(kind="tier3", since=w.start, until=w.end, limit=10_000)
        baseline = await store.baseline_latest(USER_KIND)
        bounds = await audit_bounds(store)
    finally:
        await store.close()
    if not counts and not incidents:
        raise OptionError(f"--store {redact_url(url)} holds no audit events or incidents in {iso(w.start)} .. "
                          f"{iso(w.end)}; check --from/--to "
                          "(run python -m drivers.operate on the store, or write a history with python -m drivers.generate)")
    return {"counts": counts, "incidents": incidents, "findings": [f.payload for f in findings],
            "baseline": baseline, "bounds": bounds}


def run(kind: str, opts: dict[str, Any]) -> dict[str, Any]:
    """One report for resolved options; returns its files and headline numbers."""
    w = period(opts)
    try:
        compliance = load_compliance_policy(opts["policies"])
        security = load_security_policy(opts["policies"])
    except PolicyConfigError as exc:
        raise OptionError(f"--policies: {exc}") from exc
    data = asyncio.run(load(opts["store"], w))
    total = sum(data["counts"].values())
    parts_data = ReportPartials(events=_empty_events(), activity=_empty_activity())
    cluster = "not used (no audit events)"
    if total:
        cluster = ensure_ray(opts["ray_address"], logs=opts)
        parts = plan_partitions(data["counts"], w, opts["partition_rows"])
        with Progress(total=total, label=f"{kind} report", unit="events", enabled=not opts["quiet"]) as bar:
            folded, _ = run_partitions(report_partials, opts["store"], parts, fold_report,
                                       on_done=lambda st: bar.advance(st.rows))
        if folded is not None:
            parts_data = folded
    if kind == "gdpr":
        report, headline = gdpr_report(w, parts_data.events, data["incidents"], data["bounds"], compliance)
    else:
        baselines = user_baselines(data["baseline"].data) if data["baseline"] else {}
        report, headline = security_report(w, parts_data.events, parts_data.activity, ACTIVITY_BUCKET_S,
                                           data["incidents"], data["findings"], security, baselines,
                                           baseline_version=data["baseline"].version if data["baseline"] else None)
    stem = f"{kind}-{time.strftime('%Y%m%d', time.gmtime(w.start))}-{time.strftime('%Y%m%d', time.gmtime(w.end))}"
    paths = write_report(report, Path(opts["out"]), stem)
    return {"window": w, "paths": paths, "cluster": cluster, "events": total, "headline": headline,
            "data": report.data}


def _empty_events() -> Any:
    import pandas as pd

    return pd.DataFrame({c: [] for c in ("ts", "kind", "user", "service", "collection", "operation", "records",
                                         "roles", "ip", "success", "allowed", "method", "request_type",
                                         "status", "days_to_complete", "request_id")})


def _empty_activity() -> Any:
    import pandas as pd

    return pd.DataFrame({"user": [], "bucket": [], "service": [], "n": []})


def _summary(kind: str, out: dict[str, Any]) -> Summary:
    w: Window = out["window"]
    rows: list[tuple[str, Any]] = [("period", f"{iso(w.start)} .. {iso(w.end)}"),
                                   ("events read", f"{out['events']:,}"), ("ray", out["cluster"])]
    rows += list(out["headline"].items())
    rows += [(f"report ({k})", str(p)) for k, p in out["paths"].items()]
    return f"{kind} report", rows


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (2 on bad options, an unreachable or empty store)."""
    args = list(sys.argv[1:] if argv is None else argv)
    kind = args.pop(0) if args and args[0] in KINDS else None

    def run_kind(opts: dict[str, Any]) -> dict[str, Any]:
        if kind is None:
            raise OptionError(f"name the report first: {PROG} gdpr|security --from DATE --to DATE")
        return run(kind, opts)

    return job_main(args, prog=PROG, description=DESCRIPTION, options=OPTIONS, run=run_kind,
                    summary=lambda out: _summary(str(kind), out), usage=f"{PROG} {{gdpr,security}}")


if __name__ == "__main__":
    sys.exit(main())
