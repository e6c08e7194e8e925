"""Dispatcher timing, notification log, muting and persistence (fake time: `now` is passed in)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from policies.alerting.config import alerting_policy_from_text
from policies.alerting.groups import Dispatcher
from policies.alerting.model import Alert, Silence
from policies.alerting.nflog import NotifyReason
from policies.alerting.notification import Notification
from policies.alerting.payloads import to_api_v2_alerts, to_webhook_payload

# These tables follow one alert over hours or days without re-sending it: a week-long resolve
# timeout keeps it firing (the timeout has its own tests below).
SIMPLE = """
global: {{resolve_timeout: 1w}}
route:
  receiver: hook
  group_by: [alertname]
  group_wait: 30s
  group_interval: 5m
  repeat_interval: {repeat}
  routes:
    - matchers: ['channel="chat"']
      receiver: chat
receivers:
  - {{name: hook, type: webhook, url: "http://h/x"}}
  - {{name: chat, slack: {{channel: "#c", send_resolved: false}}}}
"""


def make(repeat: str = "1h", text: str | None = None) -> Dispatcher:
    return Dispatcher(policy=alerting_policy_from_text(text or SIMPLE.format(repeat=repeat)))


def alert(start: float = 0.0, end: float | None = None, **labels: str) -> Alert:
    return Alert(labels={"alertname": "Down", **labels}, starts_at=start, ends_at=end)


def names(ns: list[Notification]) -> list[tuple[str, NotifyReason, float, list[str], list[str]]]:
    return [
        (
            n.receiver,
            n.reason,
            n.due_at,
            [a.labels.get("instance", "") for a in n.firing],
            [a.labels.get("instance", "") for a in n.resolved],
        )
        for n in ns
    ]


def deliver_all(d: Dispatcher, now: float) -> list[Notification]:
    ns = d.due(now)
    for n in ns:
        d.mark_delivered(n, now)
    return ns


def test_group_wait_then_first_notification() -> None:
    """Nothing is sent before group_wait; at group_wait the whole group goes out once."""
    d = make()
    d.ingest([alert(instance="a")], 0)
    d.ingest([alert(5, instance="b")], 5)
    assert d.due(29.9) == []
    assert d.next_due() == 30
    assert names(deliver_all(d, 30)) == [("hook", NotifyReason.FIRST, 30, ["a", "b"], [])]
    assert d.due(30) == []  # same tick asked twice: no duplicate


def test_resolved_before_group_wait_is_never_sent() -> None:
    """An alert that fires and resolves within group_wait produces no notification and leaves no group."""
    d = make()
    d.ingest([alert(instance="a")], 0)
    d.ingest([alert(0, 10, instance="a")], 10)
    assert d.due(30) == []
    assert d.status(30).groups == 0


@pytest.mark.parametrize(("repeat", "first_repeat"), [("1h", 3630.0), ("1000s", 1230.0), ("5m", 330.0)])
def test_repeat_on_first_tick_at_or_after_repeat_interval(repeat: str, first_repeat: float) -> None:
    """An unchanged group is repeated on the first group_interval tick at or after repeat_interval."""
    d = make(repeat)
    d.ingest([alert(instance="a")], 0)
    deliver_all(d, 30)
    sent = []
    for t in range(60, 4000, 10):
        sent += [n.due_at for n in deliver_all(d, float(t)) if n.reason is NotifyReason.REPEAT]
    assert sent[0] == first_repeat
    # ticks are 30 + k*300; repeats keep coming every ceil(repeat/300) ticks
    assert all((t - 30) % 300 == 0 for t in sent)


def test_new_alert_waits_for_group_interval_tick() -> None:
    """A new alert in an already notified group goes out at the next group_interval tick, with the others."""
    d = make()
    d.ingest([alert(instance="a")], 0)
    deliver_all(d, 30)
    d.ingest([alert(100, instance="b")], 100)
    assert d.due(329) == []
    assert names(deliver_all(d, 330)) == [("hook", NotifyReason.NEW_ALERTS, 330, ["a", "b"], [])]


def test_resolution_sent_then_group_removed() -> None:
    """With send_resolved, a resolution is sent at the next tick and the group then disappears."""
    d = make()
    d.ingest([alert(instance="a"), alert(instance="b")], 0)
    deliver_all(d, 30)
    d.ingest([alert(0, 400, instance="a")], 400)
    assert names(deliver_all(d, 630)) == [("hook", NotifyReason.NEW_RESOLVED, 630, ["b"], ["a"])]
    d.ingest([alert(0, 700, instance="b")], 700)
    assert names(deliver_all(d, 930)) == [("hook", NotifyReason.ALL_RESOLVED, 930, [], ["b"])]
    assert d.status(930).groups == 0
    assert d.due(5000) == []


def test_receiver_without_send_resolved_gets_no_resolution() -> None:
    """A receiver with send_resolved off (Slack's default, which the registry applies) is not told
    about resolutions, and the group still ends."""
    d = make()
    d.ingest([alert(instance="a", channel="chat")], 0)
    assert [n.receiver for n in deliver_all(d, 30)] == ["chat"]
    d.ingest([alert(0, 100, instance="a", channel="chat")], 100)
    assert d.due(330) == []
    assert d.status(330).groups == 0
    d.ingest([alert(400, instance="a", channel="chat")], 400)  # fires again later: told again
    assert names(deliver_all(d, 430)) == [("chat", NotifyReason.FIRST, 430, ["a"], [])]


def test_failed_delivery_is_retried_next_tick() -> None:
    """A notification not marked delivered is decided again at the next tick; a delivered one is not."""
    d = make()
    d.ingest([alert(instance="a")], 0)
    assert len(d.due(30)) == 1  # delivery fails: not marked
    retry = d.due(330)
    assert names(retry) == [("hook", NotifyReason.FIRST, 330, ["a"], [])]
    d.mark_delivered(retry[0], 331)
    assert d.due(630) == []


def test_resolution_kept_until_delivered() -> None:
    """Resolved alerts stay in the group until the notification about them is confirmed."""
    d = make()
    d.ingest([alert(instance="a")], 0)
    deliver_all(d, 30)
    d.ingest([alert(0, 100, instance="a")], 100)
    assert len(d.due(330)) == 1  # not delivered
    assert names(deliver_all(d, 630)) == [("hook", NotifyReason.ALL_RESOLVED, 630, [], ["a"])]
    assert d.status(630).groups == 0


def test_old_alert_flushes_immediately() -> None:
    """An alert that started more than group_wait ago flushes at once in a group that never flushed."""
    d = make()
    d.ingest([alert(-100, instance="a")], 0)
    assert d.next_due() == 0
    assert len(d.due(0)) == 1


INHIBIT = """
route:
  receiver: hook
  group_by: [alertname, service]
  group_wait: 0s
inhibit_rules:
  - source_matchers: [severity="critical"]
    target_matchers: [severity="warning"]
    equal: [service]
  - source_match: {alertname: ClusterDown}
    target_match_re: {alertname: ".*"}
receivers: [{name: hook, type: log}]
"""


def test_inhibition_with_equal_labels() -> None:
    """A firing critical alert mutes warnings of the same service only; muted alerts are counted."""
    d = make(text=INHIBIT)
    d.ingest(
        [
            Alert(labels={"alertname": "A", "service": "pay", "severity": "critical"}, starts_at=0),
            Alert(labels={"alertname": "A", "service": "pay", "severity": "warning", "i": "1"}, starts_at=0),
            Alert(labels={"alertname": "A", "service": "auth", "severity": "warning"}, starts_at=0),
        ],
        0,
    )
    ns = {n.group_labels["service"]: n for n in deliver_all(d, 0)}
    assert [a.labels["severity"] for a in ns["pay"].firing] == ["critical"]
    assert ns["pay"].muted == 1
    assert [a.labels["severity"] for a in ns["auth"].firing] == ["warning"]
    assert d.status(0).inhibited == 1
    # the source resolves: the warning is shown at the next tick
    d.ingest(
        [Alert(labels={"alertname": "A", "service": "pay", "severity": "critical"}, starts_at=0, ends_at=10)],
        10,
    )
    ns2 = deliver_all(d, 300)
    assert [a.labels["severity"] for n in ns2 for a in n.firing] == ["warning"]


def test_alert_matching_both_sides_does_not_inhibit_itself() -> None:
    """The old-style rule (source_match/target_match_re) mutes others but never its own source."""
    d = make(text=INHIBIT)
    d.ingest([Alert(labels={"alertname": "ClusterDown", "service": "k8s"}, starts_at=0)], 0)
    assert [n.group_labels["alertname"] for n in deliver_all(d, 0)] == ["ClusterDown"]
    d.ingest([Alert(labels={"alertname": "Other", "service": "x"}, starts_at=1)], 1)
    assert d.due(2) == [] and d.status(2).inhibited == 1


def test_silence_mutes_until_it_expires() -> None:
    """A silenced alert is not sent while the silence is active, and is sent at the first tick after."""
    d = make()
    d.add_silence(
        Silence.from_dict(
            {
                "id": "s1",
                "matchers": ['team="db"'],
                "startsAt": 0,
                "endsAt": 1000,
                "createdBy": "me",
                "comment": "upgrade",
            }
        )
    )
    d.ingest([alert(instance="a", team="db"), alert(instance="b", team="web")], 0)
    assert names(deliver_all(d, 30)) == [("hook", NotifyReason.FIRST, 30, ["b"], [])]
    assert d.status(30).silenced == 1
    assert d.due(930) == []
    assert names(deliver_all(d, 1230)) == [("hook", NotifyReason.NEW_ALERTS, 1230, ["a", "b"], [])]


def test_expire_silence() -> None:
    """Expiring a silence early unmutes at the next tick."""
    d = make()
    s = d.add_silence(Silence.from_dict({"matchers": ["instance=a"], "startsAt": 0, "endsAt": 1e9}))
    assert s.id  # derived when not given
    d.ingest([alert(instance="a")], 0)
    assert d.due(30) == []
    assert d.expire_silence(s.id, 100) and not d.expire_silence("unknown", 100)
    assert len(d.due(330)) == 1


TIMED = """
global: {resolve_timeout: 1w}
route:
  receiver: hook
  group_wait: 30s
  routes:
    - matchers: [team=ops]
      receiver: hook
      mute_time_intervals: [weekends]
    - matchers: [team=office]
      receiver: hook
      active_time_intervals: [berlin-business-hours]
time_intervals:
  - name: weekends
    time_intervals: [{weekdays: ['saturday:sunday']}]
  - name: berlin-business-hours
    time_intervals:
      - weekdays: ['monday:friday']
        times: [{start_time: '09:00', end_time: '17:00'}]
        location: Europe/Berlin
receivers: [{name: hook, type: webhook, url: "http://h/x"}]
"""


def ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def test_mute_time_interval_holds_group_over_weekend() -> None:
    """A route muted on weekends sends nothing on Saturday and sends at the first tick on Monday."""
    d = make(text=TIMED)
    sat = ts("2024-06-01T10:00:00")  # a Saturday
    d.ingest([alert(sat, team="ops", instance="a")], sat)
    assert d.due(sat + 30) == []
    assert d.status(sat + 30).time_muted_groups == 1
    assert d.due(ts("2024-06-02T23:55:00")) == []
    monday = ts("2024-06-03T00:00:30")
    assert names(deliver_all(d, monday)) == [("hook", NotifyReason.FIRST, monday, ["a"], [])]


def test_resolution_during_mute_is_sent_after_it() -> None:
    """A resolution that happens while the route is muted is still delivered when the mute ends."""
    d = make(text=TIMED)
    fri = ts("2024-05-31T20:00:00")
    d.ingest([alert(fri, team="ops", instance="a")], fri)
    deliver_all(d, fri + 30)
    sat = ts("2024-06-01T10:00:00")
    d.ingest([alert(fri, sat, team="ops", instance="a")], sat)
    assert d.due(sat + 300) == []
    ns = deliver_all(d, ts("2024-06-03T00:00:30"))
    assert [n.reason for n in ns] == [NotifyReason.ALL_RESOLVED]


def test_active_time_interval_uses_its_location() -> None:
    """An active interval in Europe/Berlin holds alerts outside Berlin office hours even if UTC is inside."""
    d = make(text=TIMED)
    evening = ts("2024-06-05T16:30:00")  # Wednesday 18:30 in Berlin (UTC+2)
    d.ingest([alert(evening, team="office", instance="a")], evening)
    assert d.due(evening + 30) == []
    morning = ts("2024-06-06T07:30:30")  # Thursday 09:30 in Berlin
    assert len(d.due(morning)) == 1


def test_unrouted_alerts_counted_with_shorthand_tree() -> None:
    """With the seed's receiver-less root, an alert no route takes is counted as unrouted, not lost silently."""
    d = Dispatcher(
        policy=alerting_policy_from_text(
            "routes: [{match: {severity: info}, receiver: r}]\nreceivers: [{name: r, type: log}]\n"
        )
    )
    res = d.ingest(
        [Alert(labels={"severity": "error"}, starts_at=0), Alert(labels={"severity": "info"}, starts_at=0)], 0
    )
    assert (res.accepted, res.unrouted, res.new_groups) == (2, 1, 1)
    assert d.status(0).unrouted == 1


def test_restore_from_dict_neither_repeats_nor_loses() -> None:
    """State saved as JSON and restored continues exactly: no repeat of sent alerts, pending ones still go out."""
    d = make()
    d.add_silence(Silence.from_dict({"id": "s", "matchers": ["instance=z"], "startsAt": 0, "endsAt": 5000}))
    d.ingest([alert(instance="a")], 0)
    deliver_all(d, 30)
    d.ingest([alert(100, instance="b"), alert(100, instance="z")], 100)
    state = json.loads(json.dumps(d.to_dict()))
    r = Dispatcher.from_dict(state, policy=d.policy)
    assert r.to_dict() == d.to_dict()
    got = names(deliver_all(r, 330))
    assert got == names(deliver_all(d, 330)) == [("hook", NotifyReason.NEW_ALERTS, 330, ["a", "b"], [])]
    assert r.due(630) == []  # no repeat after restore


def test_restore_under_changed_tree_reroutes_orphans() -> None:
    """Groups whose route vanished in a new policy are routed afresh instead of dropped."""
    d = make()
    d.ingest([alert(instance="a", channel="chat")], 0)
    state = d.to_dict()
    other = alerting_policy_from_text(
        "route: {receiver: hook, group_wait: 0s}\nreceivers: [{name: hook, type: log}]\n"
    )
    r = Dispatcher.from_dict(state, policy=other)
    assert [n.receiver for n in r.due(1)] == ["hook"]


def test_webhook_payload_shape() -> None:
    """The webhook body has Alertmanager's v4 fields, common labels, zero endsAt for firing alerts."""
    d = make()
    d.ingest(
        [
            Alert(
                labels={"alertname": "Down", "instance": "a", "sev": "x"},
                annotations={"s": "1"},
                starts_at=1_717_200_000.0,
                generator_url="http://g",
            ),
            Alert(
                labels={"alertname": "Down", "instance": "b", "sev": "x"},
                annotations={"s": "2"},
                starts_at=1_717_200_000.0,
            ),
        ],
        1_717_200_000.0,
    )
    (n,) = d.due(1_717_200_030.0)
    p = to_webhook_payload(n, "http://am.example")
    assert p["version"] == "4" and p["status"] == "firing" and p["receiver"] == "hook"
    assert p["groupKey"] == '{}:{alertname="Down"}' and p["groupLabels"] == {"alertname": "Down"}
    assert p["commonLabels"] == {"alertname": "Down", "sev": "x"} and p["commonAnnotations"] == {}
    assert p["externalURL"] == "http://am.example" and p["truncatedAlerts"] == 0
    first = p["alerts"][0]
    assert first == {
        "status": "firing",
        "labels": {"alertname": "Down", "instance": "a", "sev": "x"},
        "annotations": {"s": "1"},
        "startsAt": "2024-06-01T00:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://g",
        "fingerprint": n.firing[0].fingerprint,
    }
    assert to_webhook_payload(n, max_alerts=1)["truncatedAlerts"] == 1


def test_resolved_payload_and_integration_filter() -> None:
    """A mixed notification shows resolved alerts only to integrations that send resolved ones."""
    d = make()
    d.ingest([alert(instance="a"), alert(instance="b")], 0)
    deliver_all(d, 30)
    d.ingest([alert(0, 100, instance="a")], 100)
    (n,) = d.due(330)
    assert [a.labels["instance"] for a in n.for_integration(False)] == ["b"]
    assert len(n.for_integration(True)) == 2
    body = to_webhook_payload(n)
    assert [(x["status"], x["endsAt"]) for x in body["alerts"]] == [
        ("firing", "0001-01-01T00:00:00Z"),
        ("resolved", "1970-01-01T00:01:40Z"),
    ]
    assert body["status"] == "firing"
    assert [x["status"] for x in to_webhook_payload(n, send_resolved=False)["alerts"]] == ["firing"]


def test_api_v2_postable_alerts() -> None:
    """Forwarded alerts use the API v2 postable shape; optional fields are omitted when empty."""
    out = to_api_v2_alerts(
        [
            Alert(labels={"a": "1"}, starts_at=1_717_200_000.0, ends_at=1_717_200_060.0),
            Alert(labels={"a": "2"}, starts_at=1_717_200_000.0, generator_url="http://g"),
        ]
    )
    assert out == [
        {
            "labels": {"a": "1"},
            "annotations": {},
            "startsAt": "2024-06-01T00:00:00Z",
            "endsAt": "2024-06-01T00:01:00Z",
        },
        {
            "labels": {"a": "2"},
            "annotations": {},
            "startsAt": "2024-06-01T00:00:00Z",
            "generatorURL": "http://g",
        },
    ]
    assert Alert.from_dict(out[0]) == Alert(
        labels={"a": "1"}, starts_at=1_717_200_000.0, ends_at=1_717_200_060.0
    )
