"""The GDPR and security report documents, from the rows the report job gathered (see
``drivers.report``). Each returns the ``Report`` and a few headline numbers for the summary."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import orjson
import pandas as pd

from adapters.reports.render import Chart, Report, Section, Table
from adapters.store import IncidentRecord
from drivers.analysis_cli import iso
from policies.analysis.baselines import HOUR, Window
from policies.audit import schema
from policies.compliance.classification import CompliancePolicy, DataAccess, check_access, classify
from policies.security.detection_rules import SecurityPolicy
from policies.security.events import UserBaseline
from policies.security.replay import replay

BREACH_TYPES = ("data_breach", "data_exfiltration_suspected")
DSR_DEADLINE_DAYS = 30.0  # GDPR Art. 12(3): one month
BREACH_NOTICE_HOURS = 72.0  # GDPR Art. 33(1)


def _roles(text: Any) -> frozenset[str]:
    if not isinstance(text, str) or not text:
        return frozenset()
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return frozenset({text})
    return frozenset(str(r) for r in value) if isinstance(value, list) else frozenset()


def access_violations(access: pd.DataFrame, policy: CompliancePolicy) -> list[dict[str, Any]]:
    """Every compliance violation of the window's data accesses. ``usage_24h`` is the user's
    records so far that UTC day (the report's day buckets; the live analyst uses a sliding 24 h)."""
    if access.empty:
        return []
    a = access.sort_values("ts").reset_index(drop=True)
    day = np.floor(a["ts"].to_numpy() / 86400.0)
    records = a["records"].fillna(0).astype("int64")
    usage = records.groupby([a["user"], day]).cumsum().to_numpy()
    out = []
    for i, r in enumerate(a.itertuples(index=False)):
        event = DataAccess(user_id=str(r.user), roles=_roles(r.roles), service=str(r.service),
                           collection=str(r.collection), operation=str(r.operation),
                           record_count=int(records.iat[i]), timestamp=float(r.ts))
        for v in check_access(event, int(usage[i]), policy):
            out.append({"type": v.type, "regulation": v.regulation, "severity": v.severity.value,
                        "userId": v.user_id, "ts": iso(float(r.ts)), "description": v.description})
    return out


def subject_requests(dsr: pd.DataFrame) -> pd.DataFrame:
    """One row per data-subject request: live data holds a received and a final event per
    (service, requestId); the row keeps the latest state, dated when the request was received."""
    if dsr.empty or "request_id" not in dsr:
        return dsr
    d = dsr.sort_values("ts", kind="stable")
    key = d["service"].fillna("").astype(str) + "/" + d["request_id"].astype(str)
    key = key.where(d["request_id"].notna(), "#" + pd.Series(range(len(d)), index=d.index).astype(str))
    return d.assign(ts=d.groupby(key)["ts"].transform("min"), _key=key).drop_duplicates("_key", keep="last")


def gdpr_report(w: Window, events: pd.DataFrame, incidents: Sequence[IncidentRecord],
                bounds: tuple[float, float, int] | None, policy: CompliancePolicy) -> tuple[Report, dict[str, Any]]:
    """The seed's GDPR report over ``w``."""
    access = events[events["kind"] == schema.DATA_ACCESS]
    activities = []
    if not access.empty:
        grp = access.groupby(["service", "collection", "operation"])
        table = pd.DataFrame({"events": grp.size(), "records": grp["records"].sum(), "users": grp["user"].nunique()})
        for (service, collection, operation), row in table.iterrows():
            info = classify(str(service), str(collection), policy)
            activities.append({"service": service, "collection": collection, "operation": operation,
                               "events": int(row["events"]), "records": int(row["records"]),
                               "users": int(row["users"]), "classification": info.data_classification.value,
                               "lawfulBasis": info.lawful_basis.value, "retention": info.retention_text,
                               "retentionSeconds": info.retention_seconds, "gdpr": info.gdpr_applicable})
    dsr = subject_requests(events[events["kind"] == schema.DATA_SUBJECT_REQUEST])
    requests = []
    for r in dsr.itertuples(index=False):
        days = None if pd.isna(r.days_to_complete) else float(r.days_to_complete)
        age = (w.end - float(r.ts)) / 86400.0
        late = (days if days is not None else age) > DSR_DEADLINE_DAYS
        requests.append({"ts": iso(float(r.ts)), "userId": r.user, "type": r.request_type, "status": r.status,
                         "daysToComplete": days, "late": late})
    breaches = [{"id": i.id, "type": i.type, "severity": i.severity, "title": i.title, "created": iso(i.created_at),
                 "status": i.status, "affectedRecords": i.data.get("affectedRecords"),
                 "hoursToReport": i.data.get("hoursToReport"),
                 "notifiedInTime": (i.data.get("hoursToReport") or 0) <= BREACH_NOTICE_HOURS}
                for i in incidents if i.type in BREACH_TYPES]
    violations = access_violations(access, policy)
    oldest = bounds[0] if bounds else w.end
    retention = []
    for a in activities:
        overdue = w.end - oldest > a["retentionSeconds"]
        retention.append({"service": a["service"], "collection": a["collection"], "retention": a["retention"],
                          "oldestEventAgeDays": round((w.end - oldest) / 86400.0, 1),
                          "status": "purge due" if overdue else "within retention"})
    by_type: dict[str, int] = {}
    for v in violations:
        by_type[f"{v['type']} ({v['regulation']})"] = by_type.get(f"{v['type']} ({v['regulation']})", 0) + 1
    top_users = pd.Series([v["userId"] for v in violations]).value_counts().head(10) if violations else pd.Series()
    sections = [
        Section(title="Data processing activities", text=[
            f"{len(access):,} data accesses in {len(activities)} processing activities."],
            tables=[Table(header=("service", "collection", "operation", "events", "records", "users", "class",
                                  "lawful basis", "retention"),
                          rows=[(a["service"], a["collection"], a["operation"], a["events"], a["records"], a["users"],
                                 a["classification"], a["lawfulBasis"], a["retention"]) for a in activities])]),
        Section(title="Data subject requests", text=[
            f"{len(requests)} requests; {sum(r['late'] for r in requests)} beyond the {DSR_DEADLINE_DAYS:.0f}-day "
            "deadline (GDPR Art. 12(3))."],
            tables=[Table(header=("received", "user", "type", "status", "days", "late"),
                          rows=[(r["ts"], r["userId"], r["type"], r["status"], r["daysToComplete"], r["late"])
                                for r in requests])]),
        Section(title="Data breaches", text=[f"{len(breaches)} breach or suspected-breach incidents; notification "
                                             f"is due within {BREACH_NOTICE_HOURS:.0f} h (GDPR Art. 33)."],
                tables=[Table(header=("incident", "type", "severity", "created", "status", "records", "notified in time"),
                              rows=[(b["id"], b["type"], b["severity"], b["created"], b["status"],
                                     b["affectedRecords"], b["notifiedInTime"]) for b in breaches])]),
        Section(title="Access-control validation", text=[
            f"{len(violations):,} violations in {len(access):,} accesses checked against the compliance rules."],
            tables=[Table(header=("violation", "count"), rows=sorted(by_type.items())),
                    Table(header=("user", "violations"), rows=list(top_users.items()))],
            charts=[Chart(title="Violations by type", kind="bar", y_label="count",
                          bars=[(k.split(" (")[0], float(v)) for k, v in sorted(by_type.items())])] if by_type else []),
        Section(title="Retention compliance", text=[
            f"Oldest audit event in the store: {iso(oldest)}; each activity's retention from compliance.yaml."],
            tables=[Table(header=("service", "collection", "retention", "oldest event age (days)", "status"),
                          rows=[(r["service"], r["collection"], r["retention"], r["oldestEventAgeDays"], r["status"])
                                for r in retention])]),
    ]
    data = {"kind": "gdpr", "period": {"start": iso(w.start), "end": iso(w.end)}, "processingActivities": activities,
            "dataSubjectRequests": requests, "dataBreaches": breaches, "accessViolations": violations[:10_000],
            "violationCounts": by_type, "retentionCompliance": retention}
    report = Report(title="GDPR compliance report", subtitle=f"period {iso(w.start)} .. {iso(w.end)}",
                    generated_at=time.time(), sections=sections, data=data)
    return report, {"processing activities": len(activities), "subject requests": len(requests),
                    "breaches": len(breaches), "access violations": len(violations)}


def security_report(w: Window, events: pd.DataFrame, activity: pd.DataFrame, bucket_s: float,
                    incidents: Sequence[IncidentRecord], findings: Sequence[Mapping[str, Any]],
                    policy: SecurityPolicy, baselines: Mapping[str, UserBaseline],
                    baseline_version: int | None) -> tuple[Report, dict[str, Any]]:
    """The seed's security report over ``w``, with the detection rules replayed on the window."""
    auth = events[events["kind"] == schema.AUTH]
    failed = auth[auth["success"] != 1]
    authz = events[events["kind"] == schema.AUTHZ]
    denied = authz[authz["allowed"] != 1]
    alerts = replay(events[events["kind"].isin([schema.AUTH, schema.DATA_ACCESS])], activity, bucket_s, policy=policy,
                    baselines=baselines)
    hours = np.floor(failed["ts"].to_numpy() / HOUR).astype("int64")
    per_hour = pd.Series(hours).value_counts().sort_index() if len(hours) else pd.Series(dtype="int64")
    fail_series = [(float(h * HOUR), float(per_hour.get(h, 0))) for h in range(int(w.start // HOUR), int(w.end // HOUR))]
    inc_rows = [(i.id, i.type, i.severity, i.status, iso(i.created_at), i.title) for i in incidents]
    alert_rows = [(a.type, a.severity, a.user_id or a.ip_address or a.source, iso(a.timestamp), a.description)
                  for a in alerts]
    vulns = [(f.get("component"), f.get("severity"), p.get("code"), p.get("message"))
             for f in findings for p in (f.get("details") or {}).get("problems", [])]
    auth_metrics = {"attempts": len(auth), "failures": len(failed),
                    "failureRate": len(failed) / len(auth) if len(auth) else 0.0,
                    "topFailingIps": failed["ip"].value_counts().head(5).to_dict(),
                    "topFailingUsers": failed["user"].value_counts().head(5).to_dict()}
    baseline_text = (f"Baselines: user_activity v{baseline_version} ({len(baselines)} users)." if baseline_version
                     else "No learned baselines yet (run python -m drivers.baselines): the default baseline applies.")
    sections = [
        Section(title="Security incidents", text=[f"{len(incidents)} incidents opened in the period."],
                tables=[Table(header=("id", "type", "severity", "status", "created", "title"), rows=inc_rows)]),
        Section(title="Authentication", text=[
            f"{len(auth):,} attempts, {len(failed):,} failures ({auth_metrics['failureRate']:.2%})."],
            tables=[Table(header=("failing IP", "failures"), rows=list(auth_metrics["topFailingIps"].items())),
                    Table(header=("failing user", "failures"), rows=list(auth_metrics["topFailingUsers"].items()))],
            charts=[Chart(title="Failed logins per hour", y_label="failures", series={"failures": fail_series})]),
        Section(title="Authorization violations", text=[f"{len(denied):,} denied calls of {len(authz):,} checked."],
                tables=[Table(header=("service", "denied"),
                              rows=list(denied["service"].value_counts().head(10).items()))]),
        Section(title="Behaviour anomalies (detection rules replayed with baselines)",
                text=[baseline_text, f"{len(alerts)} alerts."],
                tables=[Table(header=("rule", "severity", "entity", "time", "description"), rows=alert_rows)]),
        Section(title="Vulnerability assessment (infrastructure findings)",
                text=[f"{len(findings)} findings, {len(vulns)} problems."],
                tables=[Table(header=("component", "severity", "problem", "detail"), rows=vulns)]),
    ]
    data = {"kind": "security", "period": {"start": iso(w.start), "end": iso(w.end)},
            "securityIncidents": [{"id": i.id, "type": i.type, "severity": i.severity, "status": i.status,
                                   "created": iso(i.created_at)} for i in incidents],
            "authenticationMetrics": auth_metrics,
            "authorizationViolations": {"denied": len(denied), "checked": len(authz),
                                        "byService": denied["service"].value_counts().to_dict()},
            "anomalies": [a.to_wire() for a in alerts], "baselineVersion": baseline_version,
            "vulnerabilityAssessment": [{"component": c, "severity": s, "code": k, "message": m}
                                        for c, s, k, m in vulns]}
    report = Report(title="Security compliance report", subtitle=f"period {iso(w.start)} .. {iso(w.end)}",
                    generated_at=time.time(), sections=sections, data=data)
    return report, {"incidents": len(incidents), "failed logins": len(failed), "denied calls": len(denied),
                    "anomaly alerts": len(alerts), "infrastructure problems": len(vulns)}
