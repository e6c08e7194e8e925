"""Receivers: the policy parses their three config forms and checks only their shape; the registry
(``adapters.notify.registry``) checks type names and required settings and applies each type's
defaults when the alert manager loads its policy, so a bad receiver is refused at start-up with a
message naming the file, the receiver and the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from actors.alertmanager import AlertManagerBody
from actors.clock import FakeClock
from actors.settings import OperateSettings
from adapters.notify.registry import DELIVERERS, _declared, bind_receivers, load_checked_alerting_policy
from adapters.testing.doubles import CapturingBus, InMemoryStore
from policies.alerting.config import DEFAULT_FILE, alerting_policy_from_text
from policies.alerting.receivers import MAX_INTEGRATIONS
from policies.alerting.routing import AlertingPolicy
from policies.common.config import PolicyConfigError


def checked(text: str, source: str = "<string>") -> AlertingPolicy:
    """What the alert manager does: load the policy, then bind its receivers to the registry."""
    return bind_receivers(alerting_policy_from_text(text, source))


def test_receiver_forms_are_equivalent() -> None:
    """sfa-ops' type form, the seed's mapping form and Alertmanager's *_configs form give the same receiver."""
    policy = checked("""
route: {receiver: a}
receivers:
  - {name: a, type: webhook, url: "http://x/h", send_resolved: false}
  - {name: b, webhook: {url: "http://x/h", send_resolved: false}}
  - {name: c, webhook_configs: [{url: "http://x/h", send_resolved: false}]}
  - {name: d, slack_configs: [{channel: "#x"}], email_configs: [{to: ops@example.com}]}
  - {name: e, type: mqtt}
  - {name: f, webhook: {url: "http://x/h"}, slack: {channel: "#y", send_resolved: true}}
  - {name: blackhole}
""")
    a, b, c = (policy.receivers[n].integrations for n in "abc")
    assert a == b == c
    assert a[0].settings == {"url": "http://x/h"} and a[0].send_resolved is False
    assert [(i.type, i.send_resolved) for i in policy.receivers["d"].integrations] == [
        ("slack", False),
        ("email", False),
    ]  # Alertmanager's defaults, declared by the slack and mail modules
    assert [(i.type, i.send_resolved) for i in policy.receivers["f"].integrations] == [
        ("webhook", True),
        ("slack", True),
    ]  # an explicit flag wins over the type's default
    assert policy.receivers["e"].integrations[0].settings["topic"] == "system/{cluster}/alerts"
    assert policy.receivers["blackhole"].integrations == ()


RECEIVER_ERRORS = [
    ("[{name: w, type: webhook}]", ["receivers[0] (w)", "webhook integration needs url or url_file"]),
    ("[{name: w, pagerduty_configs: [{}, {url: x}]}]", ["receivers[0] (w).pagerduty_configs[0]", "routing_key"]),
    ("[{name: w, type: carrier_pigeon}]", ["receivers[0] (w)", "carrier_pigeon", "webhook"]),
    ("[{name: w, pager: {x: 1}}]", ["receivers[0] (w).pager", "'pager'", "is not one of"]),
    ("[{name: w, type: log}, {name: w, type: log}]", ["receivers[1]", "not unique"]),
    ("[{type: log}]", ["needs a name"]),
    ("[{name: w, email: {to: a@b, send_resolved: maybe}}]", ["send_resolved"]),
    ("[{name: w, type: 'Web Hook'}]", ["receivers[0] (w)", "'Web Hook'", "not an integration type"]),
    ("[{name: w, slack: [1]}]", ["receivers[0] (w).slack", "must be a mapping"]),
]


@pytest.mark.parametrize(("receivers", "fragments"), RECEIVER_ERRORS)
def test_bad_receivers(receivers: str, fragments: list[str]) -> None:
    """Receivers missing required settings, of unknown type or duplicated are rejected with the
    file, their index and name, and the field."""
    with pytest.raises(PolicyConfigError) as err:
        checked(f"route: {{receiver: w}}\nreceivers: {receivers}\n", "test.yaml")
    assert "test.yaml" in str(err.value)
    for fragment in fragments:
        assert fragment in str(err.value)


def test_policy_holds_no_list_of_types() -> None:
    """The pure policy accepts any well-shaped type name (the registry is the one list of types);
    the same file is refused once bound to the registry."""
    text = "route: {receiver: w}\nreceivers: [{name: w, carrierpigeon: {loft: 3}}]\n"
    (integ,) = alerting_policy_from_text(text).receivers["w"].integrations
    assert (integ.type, dict(integ.settings)) == ("carrierpigeon", {"loft": 3})
    with pytest.raises(PolicyConfigError, match="'carrierpigeon' is not one of"):
        bind_receivers(alerting_policy_from_text(text))


def test_every_registered_type_delivers_and_alertmanager_types_load() -> None:
    """Each registered type has a delivery function; Alertmanager's other types still load (skipped
    when delivering) with Alertmanager's send_resolved defaults."""
    assert all(kind.deliver is not None for kind in DELIVERERS.values())
    policy = checked("route: {receiver: w}\nreceivers: [{name: w, opsgenie_configs: [{}], wechat_configs: [{}]}]\n")
    assert [(i.type, i.send_resolved) for i in policy.receivers["w"].integrations] == [
        ("opsgenie", True), ("wechat", False),
    ]


def test_registry_reads_each_modules_declaration() -> None:
    """A registry line names a module; its DELIVERER is what the registry holds, and a module
    declaring none is refused when the registry is built (at import, not at the first alert)."""
    assert _declared({"hook": "adapters.notify.webhook"})["hook"] is DELIVERERS["webhook"]
    assert DELIVERERS["webhook"].required == ("url", "url_file")
    with pytest.raises(TypeError, match=r"adapters\.notify\.base declares no DELIVERER"):
        _declared({"nothing": "adapters.notify.base"})


def test_shipped_policy_binds() -> None:
    """The shipped alerting.yaml passes the registry check (the seed's receivers)."""
    policy = load_checked_alerting_policy()
    assert policy.source == DEFAULT_FILE
    types = {i.type for r in policy.receivers.values() for i in r.integrations}
    assert types <= set(DELIVERERS)


async def test_alert_manager_refuses_a_bad_receiver_at_start(tmp_path: Path) -> None:
    """The alert manager's start fails on a receiver missing its url, naming file, receiver and field,
    before it takes any alert."""
    path = tmp_path / "alerting.yaml"
    path.write_text("alerting:\n  route: {receiver: ops}\n  receivers:\n    - {name: ops, webhook_configs: [{}]}\n")
    settings = OperateSettings(broker_url="mqtt://127.0.0.1:1", cluster_id="c1", store_url="sqlite://:memory:",
                               policies_dir=str(tmp_path))
    body = AlertManagerBody(settings, tick_s=3600, clock=FakeClock(0.0), store=InMemoryStore(), bus=CapturingBus())
    with pytest.raises(PolicyConfigError) as err:
        await body.start()
    assert str(path) in str(err.value)
    assert "receivers[0] (ops).webhook_configs" in str(err.value) and "url" in str(err.value)


def test_integrations_per_receiver_are_bounded() -> None:
    """A receiver with more than MAX_INTEGRATIONS integrations is refused by the policy, naming it."""
    hooks = ", ".join(["{url: 'http://h/x'}"] * (MAX_INTEGRATIONS + 1))
    with pytest.raises(PolicyConfigError, match=r"receivers\[0\] \(w\): more than 64 integrations"):
        alerting_policy_from_text(f"route: {{receiver: w}}\nreceivers: [{{name: w, webhook_configs: [{hooks}]}}]\n")
    hooks = ", ".join(["{url: 'http://h/x'}"] * MAX_INTEGRATIONS)
    policy = checked(f"route: {{receiver: w}}\nreceivers: [{{name: w, webhook_configs: [{hooks}]}}]\n")
    assert len(policy.receivers["w"].integrations) == MAX_INTEGRATIONS
