"""Replay a window of history through the security detection rules, with learned baselines.

The report job collects authentication failures, data accesses and per-user call counts per
5-minute bucket; ``replay`` feeds them to a fresh ``SecurityAnalyzer`` in time order (each at its
own timestamp) and returns the alerts. Pure: frames and baselines in, alerts out.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from policies.audit import schema
from policies.security.analyzer import SecurityAnalyzer
from policies.security.detection_rules import SecurityPolicy
from policies.security.events import AuthEvent, DataAccessEvent, SecurityAlert, UserActivity, UserBaseline


def _text(value: Any) -> str | None:
    return None if value is None or (isinstance(value, float) and value != value) else str(value)


def replay(
    events: pd.DataFrame, activity: pd.DataFrame, bucket_s: float, *, policy: SecurityPolicy,
    baselines: Mapping[str, UserBaseline],
) -> list[SecurityAlert]:
    """Alerts the rules raise over the window. ``events``: rows of kind ``auth`` and
    ``data_access`` (columns ts, kind, user, ip, success, service, collection, operation,
    records); ``activity``: user, bucket, service, n (calls in bucket ``bucket`` of ``bucket_s``)."""
    analyzer = SecurityAnalyzer(config=policy, baselines=baselines)
    feed: list[tuple[float, int, Any]] = []
    for r in events[events["kind"] == schema.AUTH].itertuples(index=False):
        feed.append((float(r.ts), 0, AuthEvent(user_id=_text(r.user), ip_address=_text(r.ip),
                                               success=bool(r.success == 1), timestamp=float(r.ts))))
    for r in events[events["kind"] == schema.DATA_ACCESS].itertuples(index=False):
        feed.append((float(r.ts), 1, DataAccessEvent(
            user_id=str(r.user), service=str(r.service), collection=str(r.collection),
            operation=str(r.operation), record_count=int(r.records or 0), timestamp=float(r.ts))))
    for (user, bucket), grp in activity.groupby(["user", "bucket"], sort=False):
        end = (int(bucket) + 1) * bucket_s  # a bucket's calls are known when it closes
        calls = {str(s): int(n) for s, n in zip(grp["service"], grp["n"], strict=True)}
        feed.append((end, 2, UserActivity(user_id=str(user), calls=calls, window_s=bucket_s)))
    feed.sort(key=lambda item: (item[0], item[1]))
    alerts: list[SecurityAlert] = []
    for ts, kind, ev in feed:
        if kind == 0:
            alerts += analyzer.on_auth(ev, ts)
        elif kind == 1:
            alerts += analyzer.on_data_access(ev, ts)
        else:
            alerts += analyzer.on_activity([ev], None, ts)
    return alerts
