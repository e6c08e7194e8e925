"""The Alertmanager forwarding schedule (policies/alerting/forwarding.py), driven by a fake clock.

What it must do is Alertmanager's client contract: re-send every active alert every
``resend_interval`` with ``endsAt`` 4 intervals ahead, post the resolution with ``endsAt`` = when it
ended, retry a failed post soon, and all of that independent of the notification groups' timers.
"""

from __future__ import annotations

import itertools

import pytest

from actors.clock import FakeClock
from policies.alerting.config import alerting_policy_from_text
from policies.alerting.forwarding import (
    ForwardBatch,
    Forwarder,
    Forwarding,
    ForwardSettings,
    ForwardTarget,
    forward_targets,
    receivers_of,
)
from policies.alerting.model import Alert
from policies.alerting.payloads import to_api_v2_alerts

URL = "http://am.example:9093"


def fire(name: str = "Down", at: float = 0.0, **labels: str) -> Alert:
    return Alert(labels={"alertname": name, **labels}, starts_at=at)


def resolve(alert: Alert, at: float) -> Alert:
    return Alert(labels=alert.labels, annotations=alert.annotations, starts_at=alert.starts_at, ends_at=at)


def fwd(**settings: float) -> Forwarder:
    return Forwarder(ForwardTarget(url=URL, settings=ForwardSettings(**settings)))  # type: ignore[arg-type]


def post_all(f: Forwarder, now: float, *, ok: bool = True) -> list[Alert]:
    """What is posted at ``now`` (settled with ``ok``)."""
    posted: list[Alert] = []
    for batch in f.due(now):
        posted += batch.alerts
        f.settle(batch, ok=ok, now=now)
    return posted


def test_active_alert_resent_every_interval_with_ends_at_four_intervals_ahead() -> None:
    """A held alert is posted at once, then every 60 s, each time with endsAt = now + 240 s."""
    clock = FakeClock(1000.0)
    f = fwd()
    f.observe(fire(at=clock.now()), clock.now())
    sends: list[tuple[float, float | None]] = []
    for _ in range(10 * 60 * 4):  # ten minutes in 250 ms ticks, as the actor's loop
        sends += [(clock.now(), a.ends_at) for a in post_all(f, clock.now())]
        clock.advance(0.25)
    assert [t for t, _ in sends] == [1000.0 + 60 * i for i in range(10)]
    assert all(ends == t + 240.0 for t, ends in sends)
    # Never a gap long enough for Alertmanager to resolve it on its own.
    assert all(b[0] < a[1] for a, b in itertools.pairwise(sends))  # type: ignore[operator]


def test_resolution_posted_at_once_with_ends_at_when_it_ended_then_forgotten() -> None:
    """Resolving the alert posts it at once with endsAt = the resolve time, once."""
    f = fwd()
    a = fire(at=0)
    f.observe(a, 0)
    post_all(f, 0)
    f.observe(resolve(a, 17.0), 17.5)
    [posted] = post_all(f, 17.5)
    assert posted.ends_at == 17.0
    assert to_api_v2_alerts([posted])[0]["endsAt"] == "1970-01-01T00:00:17Z"
    assert post_all(f, 600) == []
    assert f.status(600).active == 0 and f.status(600).resolved_pending == 0


def test_failed_post_retried_after_retry_interval_not_at_every_tick() -> None:
    """A failed post is tried again after retry_interval (5 s), then the normal resend resumes."""
    f = fwd(retry_interval=5.0)
    f.observe(fire(), 0)
    assert len(post_all(f, 0, ok=False)) == 1
    assert post_all(f, 4.9) == []
    assert len(post_all(f, 5.0)) == 1
    assert post_all(f, 64.9) == [] and len(post_all(f, 65.0)) == 1
    s = f.status(65)
    assert (s.posts_ok, s.posts_failed) == (2, 1)


def test_resolution_during_a_post_is_not_lost() -> None:
    """If the alert resolves while its firing post is in flight, the resolution still goes out next."""
    f = fwd()
    a = fire()
    f.observe(a, 0)
    [batch] = f.due(0)
    f.observe(resolve(a, 0.1), 0.1)  # arrives before the post settles
    f.settle(batch, ok=True, now=0.2)
    [posted] = post_all(f, 0.25)
    assert posted.ends_at == 0.1


def test_refired_alert_posted_again_at_once_and_keeps_new_start() -> None:
    """An alert that fires again after its resolution was told is a new incident, posted at once."""
    f = fwd()
    a = fire(at=0)
    f.observe(a, 0)
    post_all(f, 0)
    f.observe(resolve(a, 10), 10)
    post_all(f, 10)
    f.observe(fire(at=20), 20)
    [again] = post_all(f, 20)
    assert (again.starts_at, again.ends_at) == (20, 20 + 240)


def test_repeated_ingest_of_a_held_alert_keeps_schedule_and_first_start() -> None:
    """Re-ingesting a firing alert neither advances its resend nor moves its startsAt."""
    f = fwd()
    f.observe(fire(at=0), 0)
    post_all(f, 0)
    f.observe(fire(at=30), 30)
    assert post_all(f, 30) == []
    [resent] = post_all(f, 60)
    assert resent.starts_at == 0


def test_own_ends_at_caps_the_horizon_and_passing_it_resolves() -> None:
    """An alert with its own endsAt (sfa-ops' resolve timeout) is posted with the earlier of the two,
    and is posted as resolved at the next resend after it passed."""
    f = fwd()
    f.observe(Alert(labels={"alertname": "Timed"}, starts_at=0, ends_at=100), 0)
    [first] = post_all(f, 0)
    assert first.ends_at == 100
    post_all(f, 60)
    [last] = post_all(f, 120)
    assert last.ends_at == 100 and last.resolved(120)
    assert post_all(f, 180) == []


def test_batches_and_cap_with_overflow_count() -> None:
    """Posts carry at most batch_size alerts; beyond max_alerts new alerts are refused and counted."""
    f = fwd(batch_size=3, max_alerts=7)
    accepted = [f.observe(fire(instance=str(i)), 0) for i in range(10)]
    assert accepted == [True] * 7 + [False] * 3
    batches = f.due(0)
    assert [len(b.alerts) for b in batches] == [3, 3, 1]
    assert f.status(0).refused == 3 and f.status(0).active == 7


def test_settings_refuse_nonsense() -> None:
    """A resend interval must be positive, and endsAt at least two intervals ahead."""
    with pytest.raises(ValueError):
        ForwardSettings(resend_interval=0)
    with pytest.raises(ValueError):
        ForwardSettings(valid_for_intervals=1)


POLICY = """
route:
  receiver: default
  routes:
    - {matchers: ['team="db"'], receiver: db-am}
    - {matchers: ['team="web"'], receiver: web}
receivers:
  - {name: default, type: log}
  - name: db-am
    alertmanager_configs: [{url: "http://db-am:9093/", resend_interval: 30s}]
  - {name: web, type: log}
"""


def test_targets_from_flag_and_from_receivers() -> None:
    """--alertmanager URLs take every alert; an alertmanager integration takes its receiver's alerts."""
    policy = alerting_policy_from_text(POLICY)
    targets = forward_targets(policy, [URL + "/"])
    assert [(t.url, t.receivers, t.settings.resend_interval) for t in targets] == [
        (URL, None, 60.0),
        ("http://db-am:9093", frozenset({"db-am"}), 30.0),
    ]
    forwarding = Forwarding(targets=targets)
    db, web = fire(team="db"), fire(team="web")
    assert forwarding.observe([db, web], lambda a: receivers_of(policy, a), 0) == 0
    by_url: dict[str, set[str]] = {}
    batches: list[ForwardBatch] = forwarding.due(0)
    for b in batches:
        by_url.setdefault(b.url, set()).update(a.labels["team"] for a in b.alerts)
    assert by_url == {URL: {"db", "web"}, "http://db-am:9093": {"db"}}


def test_forwarding_is_independent_of_group_timers() -> None:
    """With the seed's 4 h repeat, the dispatcher notifies once while the forwarder posts every minute."""
    from policies.alerting.config import load_alerting_policy
    from policies.alerting.groups import Dispatcher

    policy = load_alerting_policy()
    d = Dispatcher(policy=policy)
    f = fwd()
    a = fire("InfraDown", severity="error", component="redis")
    d.ingest([a], 0)
    f.observe(a, 0)
    notified = posted = 0
    for t in range(0, 3600, 1):
        for n in d.due(t):
            d.mark_delivered(n, t)
            notified += 1
        posted += len(post_all(f, t))
    assert notified == 1 and posted == 60


def test_readme_receiver_example_loads_and_forwards_what_it_says() -> None:
    """The receiver configuration shown in README "Alerting" is a valid policy (receivers checked
    against the registry too): critical alerts go to
    `pager` (PagerDuty + the team Alertmanager, re-sent every minute), security ones to the webhook."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    marker = "# alerting.yaml in the --policies directory"
    block = readme[readme.index(marker):].split("```", 1)[0]
    from adapters.notify.registry import bind_receivers

    policy = bind_receivers(alerting_policy_from_text(block, "README.md"))  # as the alert manager loads it
    assert [i.type for i in policy.receivers["pager"].integrations] == ["pagerduty", "alertmanager"]
    assert receivers_of(policy, fire(severity="critical")) == {"pager"}
    assert receivers_of(policy, fire(severity="error", component="security")) == {"security-webhook"}
    assert receivers_of(policy, fire(severity="error", component="redis")) == {"default"}
    [target] = forward_targets(policy, [])
    assert (target.url, target.receivers, target.settings.resend_interval) == (
        "http://alertmanager.internal:9093", frozenset({"pager"}), 60.0)


@pytest.mark.parametrize("value", ["soon", "0s"])
def test_bad_resend_interval_on_a_receiver_is_a_policy_error(value: str) -> None:
    """A receiver's alertmanager resend_interval is checked when the policy loads, not in the actor."""
    from policies.common.config import PolicyConfigError

    text = f'route: {{receiver: a}}\nreceivers: [{{name: a, alertmanager_configs: [{{url: "http://x", resend_interval: "{value}"}}]}}]'
    with pytest.raises(PolicyConfigError, match="receiver a: alertmanager resend_interval"):
        alerting_policy_from_text(text)
