"""Who may publish and subscribe what on the platform's broker: one policy, rendered for mosquitto
and EMQX (``adapters.broker_acl_render``) and checked here by :func:`decide`.

Principals (MQTT usernames) and their rights, for cluster ``c``:

- ``sfa-ops`` — publishes its own state under ``system/{c}/`` (errors, emergency, circuit-breaker,
  health, alerts, incidents, security/…, audit/…) and answers on ``session/+/response``; reads all
  the traffic it watches. It does **not** write ``system/{c}/presence/…``: only a service's own
  instances say whether they are up.
- ``service-{S}`` per service — reads its calls on ``service/{S}`` (also as a shared subscription),
  answers on ``session/+/response``, writes only its own presence ``system/{c}/presence/{S}/+``, its
  own ``service/{S}/security``, ``audit/{S}/data-access`` and ``audit/{S}/data-subject`` events, ``security/authz/+`` and
  ``ui/change/#``; may call other services (``service/+``) and reads ``system/{c}/#``.
- ``caller`` — publishes calls on ``service/+`` and reads ``system/{c}/#``.
- the auth service principal (default ``auth``) — alone writes ``security/auth/+``.
- everyone authenticated reads its own ``session/{clientid}/response`` and no other session's:
  a client's session id is its MQTT client id.

A broker shared by several clusters (a test session's, a staging broker) renders the policy for
``cluster = ANY_CLUSTER`` (``+``): every ``system/{c}/`` grant then holds for every cluster id.

Nothing else is allowed: the rules are grants only, and every renderer ends in "deny the rest".
Grant-only (no per-principal deny exceptions) keeps mosquitto's ACL file, whose ``deny`` would
also take away reading, and EMQX's first-match rules equivalent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from protocol import topics
from protocol.names import check_segment, check_service_name

Action = Literal["publish", "subscribe"]
CLIENTID = "{clientid}"  # placeholder in a grant's topic: the connecting client's id

SFA_OPS = "sfa-ops"
CALLER = "caller"
ANY_CLUSTER = "+"  # the cluster id of a policy for a broker that several clusters share
DEFAULT_AUTH_PRINCIPAL = "auth"
MAX_SERVICES = 1000  # a rendered ACL file stays reviewable; more services need a database source

# What sfa-ops publishes under system/{c}/ (everything but presence).
SFA_OPS_SYSTEM_TOPICS = (
    "errors", "emergency", "circuit-breaker", "circuit-breaker/+", "health", "alerts", "incidents",
    "security/#", "audit/#",
)
PROBE_TOPICS = "sfa-ops/probe/#"  # the broker round-trip check (adapters.probes.mqtt_probe)
BROKER_STATS = "$SYS/broker/#"
# Principal names go unquoted into mosquitto's ACL file and quoted into EMQX's: keep them plain.
_PRINCIPAL_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


@dataclass(frozen=True, slots=True)
class Grant:
    """Allow ``action`` on every topic matched by ``topic`` (an MQTT filter, maybe with {clientid})."""

    action: Action
    topic: str


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    role: Literal["sfa-ops", "service", "caller", "auth", "tool"]
    grants: tuple[Grant, ...]
    service: str | None = None


@dataclass(frozen=True, slots=True)
class BrokerPolicy:
    cluster: str
    principals: tuple[Principal, ...]
    everyone: tuple[Grant, ...]

    def principal(self, name: str) -> Principal | None:
        return next((p for p in self.principals if p.name == name), None)


def service_principal(service: str) -> str:
    return f"service-{check_service_name(service)}"


def _pub(*filters: str) -> tuple[Grant, ...]:
    return tuple(Grant("publish", f) for f in filters)


def _sub(*filters: str) -> tuple[Grant, ...]:
    return tuple(Grant("subscribe", f) for f in filters)


def build_policy(cluster: str, services: tuple[str, ...] | list[str],
                 auth_principal: str = DEFAULT_AUTH_PRINCIPAL, *,
                 tools: tuple[Principal, ...] = (), everyone: tuple[Grant, ...] = ()) -> BrokerPolicy:
    """The platform's principals and rights for ``cluster`` (or :data:`ANY_CLUSTER`) and ``services``
    (validated names); ``tools`` and ``everyone`` add principals and common grants (the demo's
    simulator)."""
    c = cluster if cluster == ANY_CLUSTER else check_segment(cluster, field="cluster", max_len=63)
    names = sorted({check_service_name(s, field="services") for s in services})
    if len(names) > MAX_SERVICES:
        raise ValueError(f"{len(names)} services; at most {MAX_SERVICES} in one rendered policy")
    if not _PRINCIPAL_RE.fullmatch(auth_principal):
        raise ValueError(f"auth principal {auth_principal!r}: letters, digits, '-', '_', '.', at most 64")
    system = f"system/{c}"
    sfa = Principal(
        SFA_OPS, "sfa-ops",
        _pub(*(f"{system}/{t}" for t in SFA_OPS_SYSTEM_TOPICS), topics.RESPONSES_FILTER, PROBE_TOPICS)
        + _sub(f"{system}/#", topics.CALLS_FILTER, topics.RESPONSES_FILTER, topics.UI_CHANGES_FILTER,
               topics.AUTH_FILTER, topics.AUTHZ_FILTER, topics.SERVICE_SECURITY_FILTER,
               topics.DATA_ACCESS_FILTER, topics.DATA_SUBJECT_FILTER, PROBE_TOPICS, BROKER_STATS),
    )
    svcs = tuple(
        Principal(
            service_principal(s), "service",
            _pub(f"{system}/presence/{s}/+", topics.RESPONSES_FILTER, topics.CALLS_FILTER,
                 topics.service_security(s), topics.data_access(s), topics.data_subject(s), topics.AUTHZ_FILTER,
                 topics.UI_CHANGES_FILTER)
            + _sub(topics.service_call(s), f"{system}/#"),
            service=s,
        )
        for s in names
    )
    caller = Principal(CALLER, "caller", _pub(topics.CALLS_FILTER) + _sub(f"{system}/#"))
    auth = Principal(auth_principal, "auth", _pub(topics.AUTH_FILTER))
    principals = (sfa, *svcs, caller, auth, *tools)
    for p in tools:
        if not _PRINCIPAL_RE.fullmatch(p.name):
            raise ValueError(f"principal {p.name!r}: letters, digits, '-', '_', '.', at most 64")
    seen = [p.name for p in principals]
    if len(set(seen)) != len(seen):
        raise ValueError(f"principal names collide: {sorted({n for n in seen if seen.count(n) > 1})}")
    return BrokerPolicy(c, principals, (*_sub(f"session/{CLIENTID}/response"), *everyone))


# -- deciding -------------------------------------------------------------------------------------


def _levels_cover(grant: list[str], asked: list[str], *, subscribe: bool) -> bool:
    """True if every topic ``asked`` can name is matched by ``grant`` (MQTT rules)."""
    if asked and asked[0].startswith("$") != (bool(grant) and grant[0].startswith("$")):
        return False  # wildcards never reach $-topics; a $-grant never covers a normal topic
    for i, g in enumerate(grant):
        if g == "#":
            return True
        if i >= len(asked):
            return False
        a = asked[i]
        if subscribe and a == "#":
            return False
        if g == "+":
            continue
        if a != g or (subscribe and a == "+"):
            return False
    return len(grant) == len(asked)


def _render(topic: str, clientid: str) -> str | None:
    if CLIENTID not in topic:
        return topic
    # A client id holding a separator or wildcard would widen the grant: such a client gets none.
    if not clientid or any(ch in clientid for ch in "/+#\0"):
        return None
    return topic.replace(CLIENTID, clientid)


def decide(policy: BrokerPolicy, username: str, clientid: str, action: Action, topic: str) -> bool:
    """Would the broker allow ``username`` (connected as ``clientid``) to ``action`` ``topic``?

    For a subscription ``topic`` is the filter asked for (a ``$share/{group}/`` prefix is removed);
    it is allowed only if a grant covers every topic it can match.
    """
    subscribe = action == "subscribe"
    if subscribe and topic.startswith("$share/"):
        parts = topic.split("/", 2)
        if len(parts) < 3:
            return False
        topic = parts[2]
    if not subscribe and any(ch in topic for ch in "+#"):
        return False
    principal = policy.principal(username)
    if principal is None:
        return False
    asked = topic.split("/")
    for grant in (*principal.grants, *policy.everyone):
        if grant.action != action:
            continue
        rendered = _render(grant.topic, clientid)
        if rendered is not None and _levels_cover(rendered.split("/"), asked, subscribe=subscribe):
            return True
    return False
