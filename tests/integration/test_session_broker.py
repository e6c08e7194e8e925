"""The test session's own broker runs with authentication and the ACLs rendered from
``policies.security.broker_acl`` (``tests.support.broker``): anonymous clients are refused, a caller cannot
write ``system/{c}/#``, and operate (as ``sfa-ops``) and a service process (as ``service-{S}``,
added while the broker runs) work under those ACLs; its simulator has the rights ``make run``'s has."""

from __future__ import annotations

import uuid
from pathlib import Path

import orjson
import pytest

from adapters.mqtt.bus import MqttConfig
from adapters.runtime.urls import redact_url
from drivers.sample_platform import SERVICES
from drivers.simulate_platform import SIMULATOR, simulator_policy
from policies.security.broker_acl import CALLER, SFA_OPS, decide, service_principal
from sdk import ServiceClient
from tests.support.broker import HARNESS, SessionBroker, as_sfa_ops, session_policy
from tests.support.operations import ServiceProcess, operations
from tests.support.paho_probe import NOT_AUTHORIZED, PahoProbe, assert_login_required

pytestmark = pytest.mark.integration


SIM_TOPICS = [("publish", "service/Users"), ("publish", "sim/c1/control/Users"), ("subscribe", "sim/c1/control/+"),
              ("subscribe", "system/c1/#"), ("publish", "system/c1/errors"), ("publish", "session/x/response"),
              ("subscribe", "session/sim-1/response"), ("subscribe", "session/other/response"),
              ("publish", "sim/c1/other/Users"), ("subscribe", "#")]


@pytest.mark.parametrize(("action", "topic"), SIM_TOPICS)
def test_session_policy_gives_the_simulator_what_the_demo_does(action: str, topic: str) -> None:
    """The session's simulator principal, for every cluster, has the rights ``make run``'s has for one."""
    demo, shared = simulator_policy("c1"), session_policy(SERVICES)
    for who in (SIMULATOR, service_principal(SERVICES[0])):
        assert decide(shared, who, "sim-1", action, topic) == decide(demo, who, "sim-1", action, topic)  # type: ignore[arg-type]


def test_anonymous_and_wrong_password_are_refused(session_broker: SessionBroker) -> None:
    assert_login_required(session_broker.port, HARNESS)


def test_urls_name_their_principal_and_hide_the_password(session_broker: SessionBroker, broker_url: str) -> None:
    """The fixtures' URLs log in as the principal they say; redacted, they show no password."""
    assert MqttConfig.from_url(broker_url, env={}).username == HARNESS
    assert MqttConfig.from_url(as_sfa_ops(broker_url), env={}).username == SFA_OPS
    for name in (HARNESS, SFA_OPS, CALLER):
        url = session_broker.url(name)
        assert session_broker.password(name) in url
        assert session_broker.password(name) not in redact_url(url)


@pytest.mark.usefixtures("ray_session")
async def test_caller_cannot_write_system_topics_while_operate_works(
        session_broker: SessionBroker, broker_url: str, tmp_path: Path, client: ServiceClient,
        procs: list[ServiceProcess]) -> None:
    """A caller's publications on system/{c}/… get MQTT 5 "not authorized" and reach nobody, while
    operate's own messages flow and a service process (a principal new to the broker) is served."""
    service = f"Svc{uuid.uuid4().hex[:6]}"
    async with operations(broker_url, tmp_path) as ops:
        s = f"system/{ops.cluster}"
        procs.append(ServiceProcess(broker_url, ops.cluster, service).start())
        assert await client.call(service, "ok", {}, timeout=10) == {"ok": True, "service": service}
        await ops.watcher.wait(lambda w: any(service in h.get("services", {}) for h in w.on("/health")), 30,
                               f"{service} in operate's health summary")
        forged = orjson.dumps({"forged": True})
        with PahoProbe(session_broker.port, CALLER, session_broker.password(CALLER),
                       f"caller-{uuid.uuid4().hex[:8]}") as caller:
            assert caller.subscribe(f"{s}/#") < 0x80  # a caller reads system state…
            for topic in (f"{s}/health", f"{s}/circuit-breaker/{service}", f"{s}/security/actions/active",
                          f"{s}/presence/{service}/i1", f"{s}/errors"):
                assert caller.publish(topic, forged, retain=True) == NOT_AUTHORIZED, topic  # …and writes none
            caller.wait_for(lambda msgs: any(m.topic == f"{s}/health" for m in msgs), "operate's health")
        with PahoProbe(session_broker.port, service_principal(service), session_broker.password(
                service_principal(service)), f"svc-{uuid.uuid4().hex[:8]}") as svc:
            assert svc.publish(f"{s}/presence/{service}/i9", b'{"status":"online"}') < 0x80
            assert svc.publish(f"{s}/presence/Other/i1", forged, retain=True) == NOT_AUTHORIZED
            assert svc.publish(f"{s}/health", forged) == NOT_AUTHORIZED
        # Nothing forged reached the harness's watcher on system/{c}/#.
        assert not [d for _, _, d in ops.watcher.messages if d == {"forged": True}]
