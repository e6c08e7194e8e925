"""The AlertManager's pure delivery decisions: the mirror integration, partial deliveries (a retry
reaches only the integrations that missed this very content) and when to save; and enrichment
(runbook steps, recent events, status changes)."""

from __future__ import annotations

import orjson

from policies.alerting.delivery_plan import PartialDeliveries, content_of, save_due, with_mirror
from policies.alerting.enrichment import RecentEvents, StatusChanges, enrich, event_of
from policies.alerting.policy import Alert, Integration, Notification, NotifyReason
from policies.alerting.runbooks import load_runbooks

T0 = 1_700_000_000.0
MIRROR = Integration(type="mqtt", settings={"topic": "system/{cluster}/alerts"}, send_resolved=True)


def topic_of(template: str | None) -> str:
    return (template or "system/{cluster}/alerts").replace("{cluster}", "c1")


def down(name: str = "Down", **labels: str) -> Alert:
    return Alert(labels={"alertname": name, "severity": "critical", **labels}, starts_at=T0)


def note(*firing: Alert, resolved: tuple[Alert, ...] = (), group: str = "g1") -> Notification:
    return Notification(receiver="hook", group_key=group, route_id="r", group_labels={}, firing=firing,
                        resolved=resolved, due_at=T0, flushed_at=T0, reason=NotifyReason.FIRST)


def test_the_mirror_is_added_unless_the_receiver_publishes_on_its_topic() -> None:
    hook = Integration(type="webhook", settings={"url": "http://h/x"}, send_resolved=True)
    same = Integration(type="mqtt", settings={"topic": "system/c1/alerts"}, send_resolved=True)
    other = Integration(type="mqtt", settings={"topic": "system/{cluster}/ops"}, send_resolved=True)
    assert with_mirror([hook], MIRROR, topic_of) == [hook, MIRROR]
    assert with_mirror([same], MIRROR, topic_of) == [same]
    assert with_mirror([other], MIRROR, topic_of) == [other, MIRROR]
    assert with_mirror([hook], None, topic_of) == [hook]


def test_a_partial_delivery_is_retried_only_where_it_missed() -> None:
    """Two of three integrations settled: not delivered; the retry of the same content skips
    them, and once the third settles the notification is delivered and the entry dropped."""
    partial = PartialDeliveries()
    n = note(down())
    assert partial.done(n) == frozenset()
    first = partial.settle(n, 3, [0, 2])
    assert not first.delivered and partial.done(n) == {0, 2}
    second = partial.settle(n, 3, [1])
    assert second.delivered and second.done == {0, 1, 2}
    assert len(partial) == 0 and partial.done(n) == frozenset()


def test_changed_content_goes_to_every_integration_again() -> None:
    """A new alert joined the group since the partial delivery: nothing counts as done."""
    partial = PartialDeliveries()
    partial.settle(note(down()), 2, [0])
    grown = note(down(), down("Other"))
    assert content_of(grown) != content_of(note(down()))
    assert partial.done(grown) == frozenset()
    assert not partial.settle(grown, 2, [1]).delivered  # index 0 has not taken the new content


def test_partial_entries_are_bounded() -> None:
    partial = PartialDeliveries(max_entries=3)
    for i in range(10):
        partial.settle(note(down(), group=f"g{i}"), 2, [0])
    assert len(partial) == 3
    assert partial.done(note(down(), group="g9")) == {0} and partial.done(note(down(), group="g0")) == frozenset()


def test_save_after_a_delivery_or_when_due() -> None:
    assert save_due(saved_at=T0, now=T0 + 1, every_s=10, attempted=[object()])
    assert not save_due(saved_at=T0, now=T0 + 9, every_s=10, attempted=[])
    assert save_due(saved_at=T0, now=T0 + 10, every_s=10, attempted=[])


def test_enrich_adds_runbook_and_recent_events_unless_present() -> None:
    recent = RecentEvents()
    recent.note({"service": "orders", "type": "service_degraded", "timestamp": "2024-05-01T12:00:00Z",
                 "message": "p99 up", "secret": "not kept"})
    alert = down("ServiceDown", service="orders", component="service")
    out = enrich(alert, runbooks=load_runbooks(), recent=recent)
    steps = orjson.loads(out.annotations["runbook"])
    assert steps and all({"title", "command", "status"} <= set(s) for s in steps)
    [event] = orjson.loads(out.annotations["recentEvents"])
    assert event["message"] == "p99 up" and "secret" not in event
    own = Alert(labels=alert.labels, annotations={"runbook": "mine", "recentEvents": "[]"}, starts_at=T0)
    assert enrich(own, runbooks=load_runbooks(), recent=recent) == own
    assert enrich(down("Quiet"), runbooks=None, recent=RecentEvents()) == down("Quiet")


def test_status_changes_count_once_per_change_and_are_bounded() -> None:
    changes = StatusChanges(max_alerts=2)
    a = Alert(labels={"alertname": "A"}, starts_at=T0, ends_at=T0 + 60)
    assert changes.changed(a, T0) and not changes.changed(a, T0 + 1)
    assert changes.changed(a, T0 + 61)  # resolved now
    assert event_of(a, "resolved")["status"] == "resolved"
    for name in ("B", "C"):
        changes.changed(down(name), T0)
    assert len(changes) == 2 and changes.changed(a, T0 + 61)  # A was forgotten: new again
