"""Bounds of the alert pipeline: resolve timeout, held-alert refresh, caps with overflow counters."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.alerting.config import alerting_policy_from_text, load_alerting_policy
from policies.alerting.groups import OVERFLOW_LABELS, Dispatcher
from policies.alerting.model import Alert
from policies.alerting.nflog import NotifyReason
from policies.alerting.rules import FiringSet, alerts_for_breaker
from policies.common.config import PolicyConfigError

POLICY = """
global: {{resolve_timeout: {timeout}}}
route:
  receiver: hook
  group_by: [alertname]
  group_wait: 0s
  group_interval: 1m
  repeat_interval: 1h
  routes:
    - matchers: ['team="db"']
      receiver: db
receivers:
  - {{name: hook, type: webhook, url: "http://h/x"}}
  - {{name: db, type: webhook, url: "http://h/db"}}
"""


def make(timeout: str = "1h", **limits: int) -> Dispatcher:
    return Dispatcher(policy=alerting_policy_from_text(POLICY.format(timeout=timeout)), **limits)


def deliver_all(d: Dispatcher, now: float) -> list[tuple[NotifyReason, list[str], list[str]]]:
    out = []
    for n in d.due(now):
        d.mark_delivered(n, now)
        out.append((n.reason, [a.labels["alertname"] for a in n.firing], [a.labels["alertname"] for a in n.resolved]))
    return out


def test_alert_without_ends_at_resolves_after_resolve_timeout() -> None:
    """An alert nobody resolves (a security event) is resolved one resolve_timeout after it was received."""
    d = make()
    d.ingest([Alert(labels={"alertname": "Event"}, starts_at=0)], 0)
    assert deliver_all(d, 0) == [(NotifyReason.FIRST, ["Event"], [])]
    assert d.status(3599).firing == 1
    assert d.status(3600).firing == 0
    assert deliver_all(d, 3600) == [(NotifyReason.ALL_RESOLVED, [], ["Event"])]
    assert d.status(3600).groups == 0 and d.alerts() == ()


def test_resending_an_alert_extends_its_timeout_and_keeps_its_start() -> None:
    """A held alert re-sent before its timeout stays firing, as one incident."""
    d = make()
    for t in range(0, 3 * 3600, 600):  # re-sent every 10 minutes for three hours
        d.ingest([Alert(labels={"alertname": "Held"}, starts_at=float(t))], float(t))
        deliver_all(d, float(t))
    [held] = d.alerts()
    assert d.status(3 * 3600).firing == 1 and held.starts_at == 0


def test_explicit_ends_at_is_kept() -> None:
    """An alert that says when it ends is not given the timeout."""
    d = make()
    d.ingest([Alert(labels={"alertname": "Done"}, starts_at=0, ends_at=10)], 5)
    assert [a.ends_at for a in d.alerts()] == [10]


def test_resolve_timeout_from_global_default_and_minimum() -> None:
    """global.resolve_timeout sets it (Alertmanager's key); default 1 h; below 3 m is refused."""
    assert load_alerting_policy().resolve_timeout == 3600.0
    assert make("2h").policy.resolve_timeout == 7200.0
    with pytest.raises(PolicyConfigError, match=r"resolve_timeout.*shorter than 3m"):
        make("1m")


def test_held_conditions_are_resent_security_events_are_not() -> None:
    """The supervisor's FiringSet hands out a held breaker alert again every minute until it is
    resolved, and never re-sends a security event."""
    fs = FiringSet(refresh_s=60)
    opened = fs.filter(alerts_for_breaker({"service": "A", "to": "open", "reason": "r"}, "c", 0.0), 0.0)
    event = {"labels": {"alertname": "BruteForce", "component": "security"}, "annotations": {}, "startsAt": 0.0,
             "endsAt": None}
    fs.filter([event], 0.0)
    assert fs.due(59) == []
    assert fs.due(60) == opened and fs.due(90) == [] and fs.due(120) == opened
    fs.filter(alerts_for_breaker({"service": "A", "to": "closed"}, "c", 130.0), 130.0)
    assert fs.due(10_000) == []


def test_alerts_ended_by_their_resolve_timeout_are_forgotten() -> None:
    """A security event held with a resolve timeout is forgotten once it has passed (it ended), so
    a late resolution of it is not sent; one still running stays held."""
    fs = FiringSet(refresh_s=60)
    event = {"labels": {"alertname": "ServiceSecurityEvent", "component": "security"}, "annotations": {},
             "startsAt": 0.0, "endsAt": 3600.0}
    later = {**event, "labels": {**event["labels"], "service": "B"}, "endsAt": 7200.0}
    assert fs.filter([event, later], 0.0) == [event, later]
    assert fs.due(3599) == [] and len(fs.firing) == 2
    assert fs.due(3600) == [] and [a for a, _ in fs.firing.values()] == [later]
    assert fs.filter([{**event, "endsAt": 3700.0, "startsAt": 3700.0}], 3700.0) == []


def test_firing_set_is_bounded() -> None:
    """The FiringSet remembers at most max_held alerts and counts what it forgot."""
    fs = FiringSet(max_held=3)
    fs.filter([{"labels": {"alertname": str(i)}, "startsAt": 0.0, "endsAt": None} for i in range(5)], 0.0)
    assert len(fs.firing) == 3 and fs.dropped == 2


def test_alerts_beyond_max_alerts_are_refused_and_counted() -> None:
    """Beyond max_alerts a new alert is refused (counted); known alerts still update and resolve."""
    d = make(max_alerts=3)
    result = d.ingest([Alert(labels={"alertname": f"A{i}"}, starts_at=0) for i in range(5)], 0)
    assert (result.accepted, result.refused) == (3, 2)
    again = d.ingest([Alert(labels={"alertname": "A0"}, starts_at=0, ends_at=1)], 1)
    assert (again.accepted, again.refused) == (1, 0)
    assert d.status(1).alerts_refused == 2 and d.status(1).firing == 2


def test_groups_beyond_max_groups_overflow_into_one_group_per_route_and_are_notified() -> None:
    """Beyond max_groups an alert joins its route's overflow group: still notified, and counted."""
    d = make(max_groups=2)
    result = d.ingest([Alert(labels={"alertname": f"A{i}"}, starts_at=0) for i in range(5)], 0)
    assert result.overflowed == 3
    ns = d.due(0)
    assert sorted(dict(n.group_labels) == OVERFLOW_LABELS for n in ns) == [False, False, True]
    [overflow] = [n for n in ns if dict(n.group_labels) == OVERFLOW_LABELS]
    assert sorted(a.labels["alertname"] for a in overflow.firing) == ["A2", "A3", "A4"]
    assert d.status(0).groups_overflowed == 3 and d.status(0).groups == 3


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.text(min_size=1, max_size=8), st.sampled_from(["db", "web", ""])), max_size=400))
def test_a_flood_of_distinct_alerts_stays_within_the_caps(names: list[tuple[str, str]]) -> None:
    """Whatever arrives, held alerts stay within max_alerts and groups within max_groups plus one
    overflow group per route; every alert is accepted or counted as refused."""
    d = make(max_alerts=50, max_groups=10)
    alerts = [Alert(labels={"alertname": n, **({"team": t} if t else {})}, starts_at=0) for n, t in names]
    result = d.ingest(alerts, 0)
    assert result.accepted + result.refused == len(alerts)
    assert len(d.alerts()) <= 50
    assert d.status(0).groups <= 10 + 2
    d.due(0)
    assert d.status(0).groups <= 10 + 2
