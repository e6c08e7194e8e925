"""Guards on automatic enforcement, so that forged events cannot turn it against anyone.

Between ``plan_response`` and the IncidentResponder carrying a plan out:

- :class:`ProtectedTargets` — addresses, networks and users (``security.yaml`` ``protected:``:
  loopback, sfa-ops' own hosts, configured ones) that no automatic enforcement action may hit.
- :func:`gate_actions` — per planned action: carry it out, refuse it (protected target, approval
  queue full), or hold it for an operator's approval (no expiry; or one forgeable event behind
  the alert — ``response.yaml`` ``approval:``).
- :func:`source_over_limit` — more incidents per source than ``per_source`` allows: the alert is
  folded into the source's latest incident.
- Approval requests as store documents (:func:`approval_request`) and what to do about them on
  each poll (:func:`approval_steps`): an operator's verdict, or expiry.

Pure: ``now`` is passed in; host names are resolved by the caller.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

from policies.response.config import ResponsePolicy, SourceLimit
from policies.response.plan import EscalationDecision, OffenderHistory, PlannedAction, ResponsePlan
from policies.security.detection_rules import Protected
from policies.security.events import SecurityAlert

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
LOOPBACK: tuple[str, ...] = ("127.0.0.0/8", "::1/128")

APPROVALS = "security_approvals"
"""Store namespace (``state_*``) of approval requests, keyed by action id."""

Verdict = Literal["carry_out", "refused", "approval"]
Decision = Literal["approved", "rejected", "expired"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ProtectedTargets:
    """Never blocked, suspended or rate limited automatically."""

    networks: tuple[IpNetwork, ...] = ()
    users: frozenset[str] = frozenset()

    @classmethod
    def from_policy(cls, policy: Protected, own_hosts: Iterable[str] = ()) -> ProtectedTargets:
        """``own_hosts``: sfa-ops' own addresses and host names (used when ``own_hosts`` is on);
        names are protected as user ids too (harmless, and a host name is never an IP target)."""
        nets: list[IpNetwork] = [ipaddress.ip_network(n, strict=False) for n in policy.ips]
        names: set[str] = set(policy.users)
        if policy.loopback:
            nets += [ipaddress.ip_network(n) for n in LOOPBACK]
        if policy.own_hosts:
            for host in own_hosts:
                try:
                    nets.append(ipaddress.ip_network(host.split("%", 1)[0], strict=False))
                except ValueError:
                    if host:
                        names.add(host)
        return cls(networks=tuple(dict.fromkeys(nets)), users=frozenset(names))

    def protects(self, target: str) -> bool:
        """True when ``target`` (an IP, IPv4-mapped IPv6 included, or a user id) is protected."""
        if target in self.users:
            return True
        try:
            addr = ipaddress.ip_address(target.split("%", 1)[0])
        except ValueError:
            return False
        mapped = getattr(addr, "ipv4_mapped", None)
        return any(a in net for a in (addr, mapped) if a is not None for net in self.networks
                   if a.version == net.version)


@dataclass(frozen=True, slots=True, kw_only=True)
class GatedAction:
    action: PlannedAction
    verdict: Verdict
    reason: str = ""


def needs_approval(action: PlannedAction, alert: SecurityAlert, config: ResponsePolicy) -> str | None:
    """Why ``action`` must wait for an operator, or None."""
    ap = config.approval
    if ap.untimed and action.until is None:
        return "no expiry"
    if action.action in ap.single_event and alert.metadata.get("single_event") is True:
        return "raised by a single event"
    return None


def gate_actions(plan: ResponsePlan, alert: SecurityAlert, protected: ProtectedTargets,
                 config: ResponsePolicy, *, pending: int) -> tuple[GatedAction, ...]:
    """Each planned action's verdict. Only enforcement actions are gated (notifications,
    monitoring and forensics harm nobody). ``pending``: approvals already waiting."""
    out: list[GatedAction] = []
    for action in plan.actions:
        spec = config.actions.get(action.action)
        if spec is None or spec.kind != "enforcement":
            out.append(GatedAction(action=action, verdict="carry_out"))
        elif protected.protects(action.target):
            out.append(GatedAction(action=action, verdict="refused", reason="protected target"))
        elif (why := needs_approval(action, alert, config)) is not None:
            if pending >= config.approval.max_pending:
                out.append(GatedAction(action=action, verdict="refused", reason="approval queue full"))
            else:
                pending += 1
                out.append(GatedAction(action=action, verdict="approval", reason=why))
        else:
            out.append(GatedAction(action=action, verdict="carry_out"))
    return tuple(out)


def capped_escalation(escalation: EscalationDecision | None, alert: SecurityAlert,
                      config: ResponsePolicy) -> EscalationDecision | None:
    """An alert resting on one (forgeable) event escalates no higher than
    ``approval.single_event_max_level`` (notifying whom that level's rules notify)."""
    cap = config.approval.single_event_max_level
    if escalation is None or escalation.level <= cap or alert.metadata.get("single_event") is not True:
        return escalation
    notify = next((r.notify for r in config.escalation if r.level == cap), escalation.notify)
    return replace(escalation, level=cap, notify=notify,
                   reason=f"{escalation.reason} (capped at level {cap}: raised by a single event)")


def source_over_limit(history: OffenderHistory, source: str, now: float, limit: SourceLimit) -> bool:
    """True when ``source`` already had ``max_incidents`` incidents within the window."""
    return bool(source) and history.count(source, now=now, lookback_s=limit.window) >= limit.max_incidents


# --- approval requests (store documents) ---------------------------------------------------------


def approval_request(action: PlannedAction, now: float, reason: str) -> dict[str, Any]:
    """The stored request for ``action``; ``decision`` is filled in by an operator."""
    return {"action": {"action": action.action, "kind": action.kind, "target": action.target,
                       "incidentId": action.incident_id, "actionId": action.action_id,
                       "params": dict(action.params), "durationS": action.duration_s,
                       "undoAction": action.undo_action},
            "requestedAt": now, "reason": reason, "decision": None}


def approved_action(doc: Mapping[str, Any], now: float) -> PlannedAction:
    """The action of an approved request; a timed one runs its full duration from ``now``.
    Raises KeyError/TypeError/ValueError on a malformed document."""
    a = doc["action"]
    duration = a.get("durationS")
    duration = None if duration is None else float(duration)
    return PlannedAction(action=str(a["action"]), kind=str(a["kind"]), target=str(a["target"]),
                         incident_id=str(a["incidentId"]), action_id=str(a["actionId"]),
                         params=dict(a.get("params") or {}), duration_s=duration,
                         until=None if duration is None else now + duration,
                         undo_action=None if a.get("undoAction") is None else str(a["undoAction"]))


def decide(doc: Mapping[str, Any], verdict: Literal["approved", "rejected"], *, by: str, now: float,
           note: str = "") -> dict[str, Any]:
    """``doc`` with an operator's verdict; raises ValueError if it already has one."""
    if doc.get("decision"):
        raise ValueError(f"already {doc['decision'].get('verdict', 'decided')}")
    return {**doc, "decision": {"verdict": verdict, "by": by[:128], "at": now, "note": note[:500]}}


@dataclass(frozen=True, slots=True, kw_only=True)
class ApprovalStep:
    """Close the request ``action_id``: ``approved`` (carry out ``action``), ``rejected``,
    ``expired`` or ``malformed`` (dropped; ``action`` None)."""

    action_id: str
    decision: Decision | Literal["malformed"]
    action: PlannedAction | None = None
    incident_id: str | None = None
    by: str = ""
    note: str = ""


def approval_steps(docs: Mapping[str, Mapping[str, Any]], now: float,
                   config: ResponsePolicy) -> list[ApprovalStep]:
    """What to do this poll about the stored requests: decided ones are closed as decided,
    undecided ones older than ``expire_after`` expire; the rest keep waiting."""
    steps: list[ApprovalStep] = []
    for aid, doc in docs.items():
        try:
            inc = str(doc["action"]["incidentId"])
            decision = doc.get("decision") or {}
            verdict = decision.get("verdict")
            by, note = str(decision.get("by", "")), str(decision.get("note", ""))
            action = approved_action(doc, now)
            if verdict in ("approved", "rejected"):
                steps.append(ApprovalStep(action_id=aid, decision=verdict, action=action, incident_id=inc,
                                          by=by, note=note))
            elif now - float(doc["requestedAt"]) >= config.approval.expire_after:
                steps.append(ApprovalStep(action_id=aid, decision="expired", action=action, incident_id=inc))
        except (KeyError, TypeError, ValueError, AttributeError):
            steps.append(ApprovalStep(action_id=aid, decision="malformed"))
    return steps
