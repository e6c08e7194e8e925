"""Routing tree and configuration: table-driven from YAML strings, like Alertmanager's route tests."""

from __future__ import annotations

import pytest

from policies.alerting.config import alerting_policy_from_text
from policies.common.config import PolicyConfigError

TREE = """
global:
  resolve_timeout: 5m
templates: []
route:
  receiver: default
  group_by: [alertname]
  group_wait: 10s
  routes:
    - matchers: ['owner="team-A"']
      receiver: team-a
      routes:
        - matchers: ['env="testing"']
          receiver: testing
          group_by: ['...']
        - matchers: ['env="production"']
          receiver: prod-a
          group_wait: 1m
          continue: true
        - matchers: ['env=~"produ.*"', 'job=~".*"']
          receiver: prod-b
          group_wait: 30s
          group_interval: 1m
          repeat_interval: 1h30m
          group_by: [job]
    - match_re:
        owner: team-(B|C)
      group_by: [foo, bar]
      group_wait: 2m
      receiver: team-bc
    - match:
        group_by: role
      group_by: [role]
      routes:
        - matchers: ['{env="testing", severity!="info"}']
          receiver: testing
          routes:
            - matchers: [wait=long]
              group_wait: 2m
receivers:
  - name: default
    type: log
  - name: team-a
    webhook_configs: [{url: "http://a.example/hook"}]
  - name: testing
    type: mqtt
  - name: prod-a
    pagerduty: {routing_key: k}
  - name: prod-b
    type: webhook
    url: http://b.example/hook
  - name: team-bc
    slack_configs: [{channel: "#bc"}]
"""

# labels -> [(receiver, group_by or '...', group_wait, group_interval, repeat_interval, route key)]
ROUTE_CASES = [
    ({"owner": "team-A"}, [("team-a", ["alertname"], 10, 300, 14400, '{}/{owner="team-A"}')]),
    (
        {"owner": "team-A", "env": "testing"},
        [("testing", "...", 10, 300, 14400, '{}/{owner="team-A"}/{env="testing"}')],
    ),
    # continue: production matches prod-a and goes on to prod-b
    (
        {"owner": "team-A", "env": "production"},
        [
            ("prod-a", ["alertname"], 60, 300, 14400, '{}/{owner="team-A"}/{env="production"}'),
            ("prod-b", ["job"], 30, 60, 5400, '{}/{owner="team-A"}/{env=~"produ.*",job=~".*"}'),
        ],
    ),
    (
        {"owner": "team-A", "env": "producer"},
        [("prod-b", ["job"], 30, 60, 5400, '{}/{owner="team-A"}/{env=~"produ.*",job=~".*"}')],
    ),
    ({"owner": "team-C"}, [("team-bc", ["bar", "foo"], 120, 300, 14400, '{}/{owner=~"team-(B|C)"}')]),
    ({"owner": "team-Cx"}, [("default", ["alertname"], 10, 300, 14400, "{}")]),  # regex is anchored
    ({"owner": "team-D"}, [("default", ["alertname"], 10, 300, 14400, "{}")]),
    # receiver inherited from the parent's parent, group_wait overridden two levels down
    (
        {"group_by": "role", "env": "testing", "wait": "long"},
        [
            (
                "testing",
                ["role"],
                120,
                300,
                14400,
                '{}/{group_by="role"}/{env="testing",severity!="info"}/{wait="long"}',
            )
        ],
    ),
    # the middle node itself handles the alert when no child matches; it inherits the root receiver
    (
        {"group_by": "role", "env": "testing", "severity": "info"},
        [("default", ["role"], 10, 300, 14400, '{}/{group_by="role"}')],
    ),
]


@pytest.mark.parametrize(("labels", "expected"), ROUTE_CASES)
def test_route_matching_and_inheritance(labels: dict[str, str], expected: list[tuple]) -> None:
    """First matching child wins unless continue; unset options come from the parent; keys as Alertmanager."""
    policy = alerting_policy_from_text(TREE)
    got = []
    for r in policy.root.match(labels):
        group_by = "..." if r.opts.group_by_all else sorted(r.opts.group_by)
        got.append(
            (
                r.opts.receiver,
                group_by,
                r.opts.group_wait,
                r.opts.group_interval,
                r.opts.repeat_interval,
                r.key,
            )
        )
    assert got == expected


def test_group_labels_and_key() -> None:
    """Group labels keep only group_by labels the alert has ('...' keeps all); the key is route:labels."""
    policy = alerting_policy_from_text(TREE)
    labels = {"owner": "team-A", "env": "testing", "alertname": "Down", "x": "1"}
    (r,) = policy.root.match(labels)
    assert r.group_labels(labels) == labels
    (root,) = policy.root.match({"alertname": "Down", "owner": "nobody", "job": "j"})
    gl = root.group_labels({"alertname": "Down", "owner": "nobody", "job": "j"})
    assert gl == {"alertname": "Down"}
    assert root.group_key(gl) == '{}:{alertname="Down"}'
    (bc,) = policy.root.match({"owner": "team-B", "foo": "1"})
    assert bc.group_labels({"owner": "team-B", "foo": "1"}) == {"foo": "1"}  # bar absent: left out


BASE_RECEIVERS = "receivers: [{name: r, type: log}]\n"
ERROR_CASES = [
    (
        "route:\n  receiver: r\n  routes:\n    - {receiver: r}\n    - receiver: r\n      routes: [{receiver: nope}]\n",
        ["route.routes[1].routes[0]", "'nope'", "not declared"],
    ),
    ("routes:\n  - {match: {severity: info}, receiver: ghost}\n", ["routes[0]", "'ghost'"]),
    ("route: {group_by: [a]}\n", ["route", "default receiver"]),
    ("route: {receiver: r, matchers: ['a=b']}\n", ["root route must not have matchers"]),
    ("route: {receiver: r, routes: [{receiver: r, group_by: ['...', a]}]}\n", ["route.routes[0]", "'...'"]),
    ("route: {receiver: r, routes: [{receiver: r, group_by: [a, a]}]}\n", ["listed twice"]),
    (
        "route: {receiver: r, routes: [{matchers: ['a=~\"(\"'], receiver: r}]}\n",
        ["route.routes[0]", "regular expression"],
    ),
    ("route: {receiver: r, routes: [{matchers: ['a b'], receiver: r}]}\n", ["route.routes[0]", "matcher"]),
    ("route: {receiver: r, routes: [{recever: r}]}\n", ["recever", "unknown key"]),
    ("route: {receiver: r, routes: [{match: {severity: critcal}}]}\n", ["critcal", "info, warning"]),
    ("route: {receiver: r, routes: [{group_interval: 0s}]}\n", ["group_interval cannot be zero"]),
    ("route: {receiver: r, routes: [{group_wait: soon}]}\n", ["group_wait", "soon"]),
    ("route: {receiver: r, routes: [{mute_time_intervals: [weekend]}]}\n", ["'weekend'", "not declared"]),
    (
        "route: {receiver: r}\ntime_intervals: [{name: w, time_intervals: [{weekdays: [funday]}]}]\n",
        ["time_intervals[0]", "funday"],
    ),
    (
        "route: {receiver: r}\ntime_intervals: [{name: w, time_intervals: [{location: Mars/Olympus}]}]\n",
        ["Mars/Olympus"],
    ),
    ("route: {receiver: r}\nroutes: []\n", ["not both"]),
    ("route: {receiver: r}\ninhibit_rules: [{source_matchers: ['a=~\"[\"']}]\n", ["inhibit_rules[0]"]),
    ("global: {}\n", ["no routing tree"]),
]


@pytest.mark.parametrize(("text", "fragments"), ERROR_CASES)
def test_bad_config_errors_name_the_place(text: str, fragments: list[str]) -> None:
    """Each bad configuration raises PolicyConfigError naming the route path / key and the bad value."""
    with pytest.raises(PolicyConfigError) as err:
        alerting_policy_from_text(BASE_RECEIVERS + text, "test.yaml")
    message = str(err.value)
    assert "test.yaml" in message
    for fragment in fragments:
        assert fragment in message


def test_yaml_scalars_in_match_are_text() -> None:
    """`match: {code: 500, page: true}` matches labels "500" and "true", as Alertmanager reads them."""
    policy = alerting_policy_from_text(
        "route:\n  receiver: r\n  routes: [{match: {code: 500, page: true}, receiver: r, group_wait: 1h}]\n"
        + BASE_RECEIVERS
    )
    (r,) = policy.root.match({"code": "500", "page": "true"})
    assert r.opts.group_wait == 3600
