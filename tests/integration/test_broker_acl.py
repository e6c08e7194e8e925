"""The broker authorization policy on a real mosquitto started with the files
``python -m drivers.broker_acl mosquitto`` writes: forbidden publications are refused with MQTT 5
"not authorized" (0x87), allowed traffic flows, and the broker agrees with ``policies.security.broker_acl.decide``."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

from adapters.runtime.processes import ChildService, start_mosquitto
from drivers.broker_acl import main as broker_acl_main
from policies.security.broker_acl import build_policy, decide
from tests.support.mqtt import Collector, running_bus
from tests.support.paho_probe import NOT_AUTHORIZED, PahoProbe, assert_login_required

pytestmark = pytest.mark.integration

CLUSTER = "acl1"
SERVICES = ("Users", "Orders")


@dataclass
class AclBroker:
    svc: ChildService
    out: Path

    def password(self, principal: str) -> str:
        return (self.out / "credentials" / principal).read_text().strip()

    def probe(self, principal: str, client_id: str | None = None) -> PahoProbe:
        cid = client_id or f"{principal}-{uuid.uuid4().hex[:8]}"
        probe = PahoProbe(self.svc.port, principal, self.password(principal), cid)
        assert not probe.connack.is_failure, f"{principal} could not log in: {probe.connack}"  # type: ignore[union-attr]
        return probe

    def url(self, principal: str) -> str:
        return f"mqtt://{principal}:{self.password(principal)}@127.0.0.1:{self.svc.port}"


@pytest.fixture(scope="module")
def acl_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AclBroker]:
    out = tmp_path_factory.mktemp("broker-acl")
    assert broker_acl_main(["mosquitto", "--cluster-id", CLUSTER, "--services", ",".join(SERVICES),
                            "--out", str(out)]) == 0
    svc = start_mosquitto(password_file=out / "mosquitto" / "passwd", acl_file=out / "mosquitto" / "acl")
    yield AclBroker(svc, out)
    svc.stop()


def test_credentials_are_private_files(acl_broker: AclBroker) -> None:
    """One credential per principal, mode 0600, and the password file too."""
    creds = sorted(p.name for p in (acl_broker.out / "credentials").iterdir())
    assert creds == sorted(["sfa-ops", "service-Users", "service-Orders", "caller", "auth"])
    for p in [*(acl_broker.out / "credentials").iterdir(), acl_broker.out / "mosquitto" / "passwd"]:
        assert p.stat().st_mode & 0o777 == 0o600, p


def test_anonymous_and_wrong_password_are_refused(acl_broker: AclBroker) -> None:
    """No credentials, or a wrong password, get no connection."""
    assert_login_required(acl_broker.svc.port, "sfa-ops")


S = f"system/{CLUSTER}"
# (principal, topic, retain) that the broker must refuse.
FORBIDDEN = [
    ("caller", f"{S}/presence/Users/i-1", True),  # forged offline of a live instance
    ("caller", f"{S}/circuit-breaker/Users", True),  # forged retained breaker state
    ("caller", f"{S}/security/actions/active", True),  # forged ban set
    ("caller", f"{S}/errors", False),
    ("caller", "security/auth/login_failed", False),  # forged auth failures
    ("caller", "audit/Users/data-access", False),  # forged data-access event
    ("caller", "audit/Users/data-subject", False),  # forged data-subject request
    ("service-Orders", "audit/Users/data-subject", False),
    ("caller", "service/Users/security", False),
    ("caller", "session/someone/response", False),  # answering for a service
    ("service-Orders", f"{S}/presence/Users/i-1", True),  # another service's presence
    ("service-Orders", f"{S}/circuit-breaker/Users", True),
    ("service-Orders", "audit/Users/data-access", False),
    ("service-Orders", "service/Users/security", False),
    ("service-Orders", "security/auth/login_failed", False),
    ("sfa-ops", f"{S}/presence/Users/i-1", True),  # sfa-ops does not speak for instances
    ("sfa-ops", "service/Users", False),  # nor call services, nor inject calls for others
    ("sfa-ops", "security/auth/login_failed", False),
    ("auth", f"{S}/errors", False),
    ("auth", "service/Users", False),
    ("caller", "system/other-cluster/errors", False),
]

ALLOWED = [
    ("sfa-ops", f"{S}/errors", False),
    ("sfa-ops", f"{S}/circuit-breaker/Users", True),
    ("sfa-ops", f"{S}/security/actions/active", True),
    ("sfa-ops", "session/abc/response", False),
    ("service-Users", f"{S}/presence/Users/i-1", True),
    ("service-Users", "session/abc/response", False),
    ("service-Users", "audit/Users/data-access", False),
    ("service-Users", "audit/Users/data-subject", False),
    ("service-Users", "service/Users/security", False),
    ("service-Users", "security/authz/denied", False),
    ("service-Users", "service/Orders", False),
    ("caller", "service/Users", False),
    ("auth", "security/auth/login_failed", False),
]


@pytest.mark.parametrize(("principal", "topic", "retain"), FORBIDDEN)
def test_forbidden_publication_is_refused(acl_broker: AclBroker, principal: str, topic: str, retain: bool) -> None:
    """PUBACK says "not authorized" (0x87), as the policy decides."""
    policy = build_policy(CLUSTER, SERVICES)
    assert not decide(policy, principal, "any-client", "publish", topic)
    with acl_broker.probe(principal) as c:
        assert c.publish(topic, b'{"status":"offline"}', retain=retain) == NOT_AUTHORIZED


@pytest.mark.parametrize(("principal", "topic", "retain"), ALLOWED)
def test_allowed_publication_is_accepted(acl_broker: AclBroker, principal: str, topic: str, retain: bool) -> None:
    """The same broker accepts what the policy allows (reason code below 0x80)."""
    policy = build_policy(CLUSTER, SERVICES)
    assert decide(policy, principal, "any-client", "publish", topic)
    with acl_broker.probe(principal) as c:
        assert c.publish(topic, b"{}", retain=retain) < 0x80


def test_forged_presence_leaves_the_real_one_retained(acl_broker: AclBroker) -> None:
    """A retained ``offline`` forged on another service's presence topic is refused; sfa-ops still
    reads the instance's own retained ``online``."""
    topic = f"{S}/presence/Orders/inst-{uuid.uuid4().hex[:6]}"
    with acl_broker.probe("service-Orders") as orders:
        assert orders.publish(topic, b'{"status":"online"}', retain=True) < 0x80
    for forger in ("caller", "service-Users", "sfa-ops"):
        with acl_broker.probe(forger) as c:
            assert c.publish(topic, b'{"status":"offline"}', retain=True) == NOT_AUTHORIZED
    with acl_broker.probe("sfa-ops") as watcher:
        assert watcher.subscribe(topic) < 0x80
        [msg] = watcher.wait_for(lambda m: len(m) >= 1, "retained presence")
        assert orjson.loads(msg.payload) == {"status": "online"}


def test_caller_reads_only_its_own_session(acl_broker: AclBroker) -> None:
    """A caller subscribed to every session gets its own responses only (session id = client id)."""
    me, other = f"sess-{uuid.uuid4().hex[:8]}", f"sess-{uuid.uuid4().hex[:8]}"
    with acl_broker.probe("caller", me) as caller, acl_broker.probe("service-Users") as svc:
        caller.subscribe("session/+/response")
        # Same publisher, same subscriber: the broker keeps the order, so when the caller's own
        # answer (sent second) has arrived, the other session's would have arrived before it.
        assert svc.publish(f"session/{other}/response", b'{"for":"other"}') < 0x80
        assert svc.publish(f"session/{me}/response", b'{"for":"me"}') < 0x80
        got = caller.wait_for(lambda m: any(x.topic == f"session/{me}/response" for x in m), "own answer")
        assert {m.topic for m in got} == {f"session/{me}/response"}


async def test_project_bus_logs_in_as_its_principal(acl_broker: AclBroker) -> None:
    """sfa-ops' own MqttBus, with the generated credential, publishes system state a caller reads."""
    got = Collector()
    async with running_bus(acl_broker.url("caller")) as reader, running_bus(acl_broker.url("sfa-ops")) as sfa:
        await reader.subscribe(f"{S}/health", got, qos=1)
        await sfa.publish(f"{S}/health", {"status": "healthy"}, qos=1)
        [msg] = await got.wait_for(1)
        assert orjson.loads(msg.payload) == {"status": "healthy"}
