"""The test session's broker: a real mosquitto run with authentication and the ACLs the project
renders from ``policies.security.broker_acl`` (``drivers.broker_acl.write_mosquitto``), for every cluster
id at once (``ANY_CLUSTER``: tests pick random ones).

Principals, as on a real platform broker:

- ``sfa-ops`` — what operate connects as (``operations()``);
- ``service-{S}`` — what a service process connects as (``ServiceProcess``); tests name services
  freely, so a principal is added on first use: the files are rendered again and mosquitto
  reloads them on SIGHUP;
- ``caller`` and ``auth`` — as the policy defines them; ``simulator`` — the demo's simulator
  (``drivers.simulate``), with its fault-mode control topics ``sim/+/control/+``;
- ``harness`` — the test harness itself. It plays observer and attacker: it reads everything and
  publishes the forged messages that sfa-ops must refuse at the application layer (those tests
  test sfa-ops' own defences, behind the broker's), so it may publish and read every topic.

Passwords live in ``credentials/`` files (0600) and in URLs handed to clients in this process;
child processes get theirs through the environment (:meth:`SessionBroker.child_login`), never
argv. Show a URL only through ``adapters.runtime.urls.redact_url``.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import quote, urlsplit

from adapters.runtime.processes import ChildService, Mosquitto
from drivers.broker_acl import BrokerLogins, credentials, write_mosquitto
from drivers.simulate_platform import SIMULATOR
from policies.security.broker_acl import (
    ANY_CLUSTER,
    SFA_OPS,
    BrokerPolicy,
    Grant,
    Principal,
    build_policy,
    service_principal,
)
from tests.support.paho_probe import PahoProbe

HARNESS = "harness"
HARNESS_PRINCIPAL = Principal(HARNESS, "tool", (Grant("publish", "#"), Grant("subscribe", "#"),
                                                Grant("subscribe", "$SYS/#")))
# The demo's simulator and its fault-mode control topics, as drivers.simulate_platform.simulator_policy
# grants them, for every cluster id.
SIM_CONTROL = "sim/+/control/+"
SIMULATOR_PRINCIPAL = Principal(SIMULATOR, "tool", (Grant("publish", "service/+"), Grant("publish", SIM_CONTROL),
                                                    Grant("subscribe", SIM_CONTROL), Grant("subscribe", "system/+/#")))
RELOAD_TIMEOUT = 10.0
ENV_VAR = "SFA_TEST_SESSION_BROKER"  # "{port}:{dir}" (no secret): see SessionBroker.export

# The session's broker by (host, port), so helpers given a URL can log in as another principal.
_BROKERS: dict[tuple[str, int], SessionBroker] = {}


def session_policy(services: Iterable[str]) -> BrokerPolicy:
    """The platform's policy for every cluster id, plus the harness and the demo's simulator."""
    return build_policy(ANY_CLUSTER, sorted(services), tools=(HARNESS_PRINCIPAL, SIMULATOR_PRINCIPAL),
                        everyone=(Grant("subscribe", SIM_CONTROL),))


class SessionBroker:
    """A mosquitto holding every client to the policy's ACLs; see the module docstring."""

    def __init__(self, out: Path, *, port: int | None = None) -> None:
        """Render the files under ``out`` and start mosquitto; with ``port``, attach to the session's
        broker already running there instead (a child process of the session: :func:`attach_from_env`)."""
        self.out = out
        self.services: set[str] = set()
        self._lock = threading.Lock()
        self.child: ChildService | None = None
        if port is None:
            self.policy, files = self._render()
            self.child = Mosquitto(password_file=files[0], acl_file=files[1]).start()
            self.port = self.child.port
        else:
            self.services = {p.name.removeprefix("service-") for p in (out / "credentials").iterdir()
                             if p.name.startswith("service-")}
            self.policy = self._policy()
            self.logins = BrokerLogins(credentials(self.policy, out))
            self.port = port
        _BROKERS[("127.0.0.1", self.port)] = self

    def export(self) -> dict[str, str]:
        """The environment that lets a child process of the session use this broker's logins."""
        return {ENV_VAR: f"{self.port}:{self.out}"}

    def _policy(self) -> BrokerPolicy:
        return session_policy(self.services)

    def _render(self) -> tuple[BrokerPolicy, list[Path]]:
        policy = self._policy()
        files = write_mosquitto(policy, self.out)  # keeps the passwords already drawn
        self.logins = BrokerLogins(credentials(policy, self.out))
        return policy, files

    @property
    def plain_url(self) -> str:
        """The broker's URL without credentials (for a child process, with :meth:`child_login`)."""
        return f"mqtt://127.0.0.1:{self.port}"

    def password(self, principal: str) -> str:
        return self.logins.passwords[principal]

    def url(self, principal: str) -> str:
        """A URL that logs in as ``principal`` (holds its password: never print it unredacted)."""
        return f"mqtt://{quote(principal, safe='')}:{quote(self.password(principal), safe='')}@127.0.0.1:{self.port}"

    def service_principal(self, service: str) -> str:
        """``service-{service}``, added to the policy (and the running broker) if new."""
        name = service_principal(service)
        with self._lock:
            if service not in self.services:
                if self.child is None:
                    raise AssertionError(f"{name} is not on the session broker; add it in the session first")
                self.services.add(service)
                self.policy, files = self._render()
                self._reload(name, files)
        return name

    def platform_logins(self, services: Iterable[str]) -> BrokerLogins:
        """The logins for the sample platform and its simulator (``drivers.simulate``), ``services``'
        principals added first."""
        for service in services:
            self.service_principal(service)
        return self.logins

    def password_file(self, principal: str) -> Path:
        """The file (0600) holding ``principal``'s password, for ``SFA_OPS_MQTT_PASSWORD_FILE``."""
        self.password(principal)  # a known principal
        return self.out / "credentials" / principal

    def child_login(self, principal: str) -> tuple[str, dict[str, str]]:
        """(URL without credentials, environment with ``principal``'s login) for a child process."""
        return self.plain_url, self.logins.env(principal)

    def _reload(self, principal: str, files: list[Path]) -> None:
        assert self.child is not None
        # mosquitto reads copies in its work dir (Mosquitto wrote them 0600); writing into them keeps
        # their owner and mode. SIGHUP makes it read them again.
        for key, src in (("password_file", files[0]), ("acl_file", files[1])):
            (self.child.workdir / key).write_bytes(src.read_bytes())
        self.child.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + RELOAD_TIMEOUT
        while True:  # the new principal logs in once mosquitto has read both files again
            try:
                probe = PahoProbe(self.port, principal, self.password(principal), f"reload-{os.getpid()}")
            except (AssertionError, OSError):  # no CONNACK while it reloads
                pass
            else:
                probe.close()
                if probe.connack is not None and not probe.connack.is_failure:
                    return
            if time.monotonic() > deadline:
                raise AssertionError(f"mosquitto did not take the new principal {principal} within "
                                     f"{RELOAD_TIMEOUT:g} s; see {self.child.log_path}")
            time.sleep(0.05)  # polling the broker's state: there is no event to wait on

    def stop(self) -> None:
        _BROKERS.pop(("127.0.0.1", self.port), None)
        if self.child is not None:
            self.child.stop()


def attach_from_env() -> SessionBroker | None:
    """In a child process of the session (``SessionBroker.export`` in its environment): the
    session's broker, with the principals it had when the child started."""
    value = os.environ.get(ENV_VAR)
    if not value:
        return None
    port, _, out = value.partition(":")
    return SessionBroker(Path(out), port=int(port))


def session_broker(url: str) -> SessionBroker | None:
    """The session broker ``url`` points at, if any (a test's own broker gives None)."""
    parts = urlsplit(url)
    try:
        return _BROKERS.get((parts.hostname or "", parts.port or 1883))
    except ValueError:
        return None


def as_principal(url: str, principal: str) -> str:
    """``url`` logging in as ``principal`` if it names the session broker, else ``url`` unchanged."""
    broker = session_broker(url)
    return broker.url(principal) if broker is not None else url


def as_sfa_ops(url: str) -> str:
    return as_principal(url, SFA_OPS)


def service_child_login(url: str, service: str) -> tuple[str, dict[str, str]]:
    """(URL, extra environment) for a child process serving ``service``: on the session broker it
    logs in as the service's principal (password via the environment); elsewhere ``url`` as is."""
    broker = session_broker(url)
    if broker is None:
        return url, {}
    return broker.child_login(broker.service_principal(service))


def child_login(url: str, principal: str) -> tuple[str, dict[str, str]]:
    """(URL, extra environment) for a child process logging in as ``principal`` (``HARNESS``,
    ``SFA_OPS``…) on the session broker; elsewhere ``url`` as is."""
    broker = session_broker(url)
    return (url, {}) if broker is None else broker.child_login(principal)
