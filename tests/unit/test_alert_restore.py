"""Property: saving and restoring the dispatcher at any point changes nothing that is sent later."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from policies.alerting.config import alerting_policy_from_text
from policies.alerting.groups import Dispatcher
from policies.alerting.model import Alert

POLICY = alerting_policy_from_text("""
route:
  receiver: hook
  group_by: [service]
  group_wait: 20s
  group_interval: 60s
  repeat_interval: 200s
  routes:
    - {matchers: [severity=critical], receiver: pager, continue: true, group_wait: 0s}
    - {matchers: [service=db], receiver: chat}
inhibit_rules:
  - {source_matchers: [severity=critical], target_matchers: [severity=warning], equal: [service]}
receivers:
  - {name: hook, type: webhook, url: "http://h"}
  - {name: pager, pagerduty: {routing_key: k}}
  - {name: chat, slack: {channel: "#db"}}
""")

# one step: (seconds to advance, alert index or None, resolve?, deliver succeeds?)
steps = st.lists(
    st.tuples(st.integers(1, 90), st.one_of(st.none(), st.integers(0, 5)), st.booleans(), st.booleans()),
    min_size=1,
    max_size=40,
)
LABELS = [
    {"service": s, "severity": v, "alertname": "X"}
    for s, v in [
        ("db", "warning"),
        ("db", "critical"),
        ("api", "warning"),
        ("api", "critical"),
        ("web", "info"),
        ("db", "info"),
    ]
]


def run(script: list[tuple[int, int | None, bool, bool]], restore_at: int | None) -> list[tuple]:
    d = Dispatcher(policy=POLICY)
    now = 1000.0
    sent: list[tuple] = []
    for i, (advance, idx, resolve, ok) in enumerate(script):
        if i == restore_at:
            d = Dispatcher.from_dict(json.loads(json.dumps(d.to_dict())), policy=POLICY)
        now += advance
        if idx is not None:
            d.ingest([Alert(labels=LABELS[idx], starts_at=now - 1, ends_at=now if resolve else None)], now)
        for n in d.due(now):
            sent.append(
                (
                    n.receiver,
                    n.group_key,
                    n.reason,
                    n.due_at,
                    tuple(a.fingerprint for a in n.firing),
                    tuple(a.fingerprint for a in n.resolved),
                    ok,
                )
            )
            if ok:
                d.mark_delivered(n, now)
    return sent


@settings(max_examples=150, deadline=None)
@given(script=steps, data=st.data())
def test_restore_anywhere_is_invisible(
    script: list[tuple[int, int | None, bool, bool]], data: st.DataObject
) -> None:
    """A JSON round trip of the state at any step yields exactly the notifications of an uninterrupted run."""
    restore_at = data.draw(st.integers(0, len(script) - 1))
    assert run(script, restore_at) == run(script, None)
