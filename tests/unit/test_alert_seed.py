"""The seed's alert routing YAML loads as is, and the shipped default holds it under a root receiver.

The seed is a PDF turned into text: the YAML block lost its indentation, gained blank lines
between every line and a page header ("Alert Manager Implementation") in the middle. The helper
below undoes exactly that: it drops blank lines and lines without a colon (the header; every YAML
line of this block has one), and re-indents from the keys, knowing the block's shape
(``alerting`` > ``routes``/``receivers`` > list items > their keys > nested mappings).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from policies.alerting.config import DEFAULT_FILE, alerting_policy_from_text, load_alerting_policy
from policies.alerting.groups import Dispatcher
from policies.alerting.model import Alert
from policies.common.config import DEFAULTS_DIR

SEED = Path("/work/shared/seed/000_76b2e5b5d6f6239f.txt")
_ROUTE_KEYS = {
    "receiver",
    "group_wait",
    "group_interval",
    "repeat_interval",
    "continue",
    "group_by",
    "matchers",
    "match",
    "match_re",
    "routes",
    "mute_time_intervals",
    "active_time_intervals",
}
_INTEGRATIONS = {"slack", "pagerduty", "email", "phone", "webhook", "mqtt", "log", "alertmanager"}


def seed_alerting_block(text: str) -> list[str]:
    """The raw lines from ``alerting:`` (just before the first ``receivers:``) to the next code block."""
    lines = text.splitlines()
    at = next(i for i, line in enumerate(lines) if line.strip() == "receivers:")
    start = max(i for i in range(at) if lines[i].strip() == "alerting:")
    end = next(i for i in range(at, len(lines)) if lines[i].strip() in ("csharp", "yaml", "json"))
    return lines[start:end]


def demangle(lines: list[str]) -> str:
    """Rebuild the indentation the PDF extraction dropped (see the module docstring)."""
    out: list[str] = []
    section = ""
    for raw in lines:
        line = raw.strip()
        if not line or ":" not in line:
            continue  # blank separators and the page header
        key = line.split(":", 1)[0]
        if line == "alerting:":
            out.append(line)
        elif line in ("routes:", "receivers:"):
            section = key
            out.append("  " + line)
        elif line.startswith("- "):
            out.append("    " + line)
        elif section == "routes":
            out.append((" " * 6 if key in _ROUTE_KEYS else " " * 8) + line)
        else:
            out.append((" " * 6 if key in _INTEGRATIONS else " " * 8) + line)
    return "\n".join(out) + "\n"


@pytest.fixture(scope="module")
def seed_yaml() -> str:
    if not SEED.exists():
        pytest.skip(f"seed document not present at {SEED}")
    return demangle(seed_alerting_block(SEED.read_text()))


def test_seed_block_loads(seed_yaml: str) -> None:
    """The YAML extracted from the seed text loads as a valid policy with its five routes and receivers."""
    policy = alerting_policy_from_text(seed_yaml, str(SEED))
    assert [r.opts.receiver for r in policy.root.routes] == [
        "monitoring-channel",
        "dev-team-slack",
        "on-call-engineer",
        "critical-alerts",
        "emergency-response",
    ]
    assert sorted(policy.receivers) == sorted(r.opts.receiver for r in policy.root.routes)
    assert [i.type for i in policy.receivers["emergency-response"].integrations] == [
        "pagerduty",
        "phone",
        "slack",
        "email",
    ]


def test_shipped_default_is_the_seed_block_under_a_root_receiver(seed_yaml: str) -> None:
    """policies/alerting.yaml holds the seed's routes and receivers as they are (comments aside),
    under a root whose receiver ``default`` (log + MQTT) and a first route for the responder's
    ``notify: security-team`` alerts (receiver ``security-team``) are the only additions."""
    shipped = yaml.safe_load((DEFAULTS_DIR / DEFAULT_FILE).read_text())["alerting"]
    seed = yaml.safe_load(seed_yaml)["alerting"]
    assert set(shipped) == {"route", "receivers"}
    security = {"match": {"notify": "security-team"}, "receiver": "security-team",
                "group_by": ["alertname", "incident"], "group_wait": "0s"}
    assert shipped["route"] == {"receiver": "default", "routes": [security, *seed["routes"]]}
    assert shipped["receivers"] == [
        {"name": "default", "log": {}, "mqtt": {"topic": "system/{cluster}/alerts"}},
        {"name": "security-team", "log": {}, "mqtt": {"topic": "system/{cluster}/alerts"}},
        *seed["receivers"],
    ]


SEVERITY_CASES = [
    ({"severity": "info"}, ["monitoring-channel"], 30.0, 14400.0),
    ({"severity": "warning"}, ["dev-team-slack"], 30.0, 14400.0),
    ({"severity": "error", "component": "service"}, ["on-call-engineer"], 30.0, 600.0),
    # The seed's tree has no route for these: the root receiver takes them (Alertmanager's defaults).
    ({"severity": "error", "component": "redis"}, ["default"], 30.0, 14400.0),
    ({"severity": "error", "component": "security"}, ["default"], 30.0, 14400.0),
    ({"severity": "critical"}, ["critical-alerts"], 0.0, 300.0),
    ({"severity": "emergency"}, ["emergency-response"], 0.0, 120.0),
    ({"alertname": "NoSeverity"}, ["default"], 30.0, 14400.0),
    # The responder's notify_security_team, whatever its severity.
    ({"severity": "critical", "notify": "security-team"}, ["security-team"], 0.0, 14400.0),
    ({"severity": "warning", "notify": "security-team"}, ["security-team"], 0.0, 14400.0),
]


@pytest.mark.parametrize(("labels", "receivers", "group_wait", "repeat"), SEVERITY_CASES)
def test_default_policy_routes_by_severity(
    labels: dict[str, str], receivers: list[str], group_wait: float | None, repeat: float | None
) -> None:
    """The shipped tree sends each severity to the seed's receiver with the seed's timings, and
    every alert no seed route takes to the root receiver."""
    policy = load_alerting_policy()
    routes = [r for r in policy.root.match(labels) if r.opts.receiver]
    assert [r.opts.receiver for r in routes] == receivers
    for r in routes:
        assert (r.opts.group_wait, r.opts.repeat_interval) == (group_wait, repeat)


def test_default_policy_emergency_is_immediate_and_repeats_every_2m() -> None:
    """Under the default policy an emergency is sent at once and repeated on the first 5m tick after 2m."""
    d = Dispatcher(policy=load_alerting_policy())
    d.ingest([Alert(labels={"severity": "emergency", "alertname": "BrokerDown"}, starts_at=0)], 0)
    (n,) = d.due(0)
    assert n.receiver == "emergency-response"
    d.mark_delivered(n, 0)
    assert d.due(299) == []
    (again,) = d.due(300)  # repeat_interval 2m < group_interval 5m: next tick
    assert again.reason.value == "repeat_interval_elapsed"


def test_override_file_merges_over_default(tmp_path: Path) -> None:
    """An override directory's alerting.yaml replaces keys of the shipped default."""
    (tmp_path / DEFAULT_FILE).write_text(
        "alerting:\n  receivers:\n    - {name: monitoring-channel, type: log}\n"
        "  routes:\n    - {match: {severity: info}, receiver: monitoring-channel}\n"
    )
    policy = load_alerting_policy(tmp_path)
    assert list(policy.receivers) == ["monitoring-channel"]
    assert policy.receivers["monitoring-channel"].integrations[0].type == "log"


@pytest.mark.parametrize("severity", [None, "info", "warning", "error", "critical", "emergency"])
@pytest.mark.parametrize(
    "component", [None, "service", "security", "store", "mqtt_broker", "postgresql_cluster", "redis"]
)
def test_default_policy_routes_every_alert_somewhere(severity: str | None, component: str | None) -> None:
    """Under the shipped tree no alert is unrouted: each reaches a receiver, and the ones no seed
    route takes reach ``default``, which logs and publishes on the alerts topic."""
    labels = {"alertname": "Any"}
    labels |= {"severity": severity} if severity else {}
    labels |= {"component": component} if component else {}
    d = Dispatcher(policy=load_alerting_policy())
    result = d.ingest([Alert(labels=labels, starts_at=0)], 0)
    assert (result.accepted, result.unrouted) == (1, 0)
    (n,) = d.due(60)
    seed_takes = severity in ("info", "warning", "critical", "emergency") or (
        severity == "error" and component == "service"
    )
    assert (n.receiver != "default") == seed_takes
    if not seed_takes:
        kinds = [i.type for i in d.policy.receivers[n.receiver].integrations]
        assert kinds == ["log", "mqtt"]
