"""The supervisor's board of open incidents, active actions and recent alerts, fed what the real
producers build (``policies.alerting.rules`` alerts, ``IncidentMessage`` / ``ActiveActions`` wire
documents), its bounds, and the metric series and page sections derived from it."""

from __future__ import annotations

from typing import Any

from policies.alerting.rules import alerts_for_breaker, alerts_for_health
from policies.metrics.ops_series import ops_families
from policies.supervision.ops_board import MAX_OPEN_INCIDENTS, RECENT_ALERTS, SHOWN_INCIDENTS, OpsBoard
from policies.supervision.status_view import status_view
from protocol.security import ActiveActions, EnforcementAction, IncidentMessage

T0 = 1_700_000_000.0


def incident(inc_id: str, event: str = "created", status: str = "open", severity: str = "error",
             at: float = T0) -> dict[str, Any]:
    return IncidentMessage.model_validate(
        {"event": event, "clusterId": "c1", "incidentId": inc_id, "incidentType": "security",
         "severity": severity, "title": "Brute force from 203.0.113.9", "source": "203.0.113.9",
         "status": status, "timestamp": at}).to_wire()


def active(*actions: tuple[str, str, float | None]) -> dict[str, Any]:
    return ActiveActions(actions=[EnforcementAction(action=a, target=t, until=u, incident_id="inc-1")
                                  for a, t, u in actions], timestamp=T0).to_wire()


def test_alerts_counted_when_they_start_and_shown_newest_first() -> None:
    board = OpsBoard()
    opened = alerts_for_breaker({"service": "Payments", "to": "open", "reason": "errors"}, "c1", T0)
    board.alerts_sent(opened, T0)
    board.alerts_sent(opened, T0 + 1)  # the same condition again: not a new alert
    board.alerts_sent(alerts_for_health({"type": "service_unavailable", "service": "Users", "reason": "x"},
                                        "c1", T0 + 2), T0 + 2)
    s = board.summary(T0 + 3)
    assert s["alerts"]["sent"] == {"critical": 1, "error": 1}
    assert [(a["alertname"], a["service"], a["state"]) for a in s["alerts"]["recent"]] == [
        ("ServiceDegraded", "Users", "resolved"), ("ServiceUnavailable", "Users", "firing"),
        ("CircuitBreakerOpen", "Payments", "firing")]
    assert s["alerts"]["recent"][2]["summary"] == "Circuit breaker for Payments opened: errors"
    assert s["alerts"]["recent"][2]["startsAt"].startswith("2023-11-14T22:13:20")
    board.alerts_sent(alerts_for_breaker({"service": "Payments", "to": "closed"}, "c1", T0 + 4), T0 + 4)
    board.alerts_sent(opened, T0 + 5)  # fires again after its resolution: counted again
    s = board.summary(T0 + 6)
    assert s["alerts"]["sent"]["error"] == 2 and s["alerts"]["firing"] == 2


def test_alert_with_a_passed_resolve_timeout_counts_again_and_shows_resolved() -> None:
    board = OpsBoard()
    alert = {"labels": {"alertname": "BruteForce", "severity": "critical", "component": "security"},
             "annotations": {"summary": "x" * 1000}, "startsAt": T0, "endsAt": T0 + 60}
    board.alerts_sent([alert], T0)
    assert board.summary(T0 + 61)["alerts"]["recent"][0]["state"] == "resolved"
    assert len(board.summary(T0)["alerts"]["recent"][0]["summary"]) == 300
    board.alerts_sent([{**alert, "startsAt": T0 + 100, "endsAt": T0 + 160}], T0 + 100)
    assert board.summary(T0 + 101)["alerts"]["sent"] == {"critical": 2}


def test_recent_alerts_bounded_and_hostile_ones_refused() -> None:
    board = OpsBoard()
    for i in range(RECENT_ALERTS + 15):
        board.alerts_sent(alerts_for_breaker({"service": f"S{i}", "to": "open"}, "c1", T0 + i), T0 + i)
    board.alerts_sent([{"labels": "not a mapping"}], T0)
    s = board.summary(T0 + 100)
    assert len(s["alerts"]["recent"]) == RECENT_ALERTS and s["alerts"]["recent"][0]["service"] == "S34"
    assert s["alerts"]["sent"] == {"error": RECENT_ALERTS + 15} and s["refused"] == 1


def test_incidents_open_until_resolved_and_keep_their_opening_time() -> None:
    board = OpsBoard()
    board.published("incident", incident("inc-1"))
    board.published("incident", incident("inc-2", severity="critical", at=T0 + 5))
    board.published("incident", incident("inc-1", event="updated", status="contained", at=T0 + 9))
    s = board.summary(T0 + 10)["incidents"]
    assert [(i["id"], i["state"], i["severity"]) for i in s["open"]] == [
        ("inc-2", "open", "critical"), ("inc-1", "contained", "error")]
    assert s["open"][1]["openedAt"].startswith("2023-11-14T22:13:20") and s["open"][1]["source"] == "203.0.113.9"
    assert s["bySeverity"] == {"critical": 1, "error": 1}
    board.published("incident", incident("inc-1", event="resolved", status="resolved", at=T0 + 20))
    board.published("incident", {"incidentId": "forged"})
    board.published("tier2", {"anything": 1})  # not an incident: ignored
    s2 = board.summary(T0 + 21)
    assert [i["id"] for i in s2["incidents"]["open"]] == ["inc-2"] and s2["refused"] == 1


def test_incidents_bounded() -> None:
    board = OpsBoard()
    for i in range(MAX_OPEN_INCIDENTS + 3):
        board.published("incident", incident(f"inc-{i}", at=T0 + i))
    s = board.summary(T0 + 2000)
    assert s["incidents"]["total"] == MAX_OPEN_INCIDENTS and len(s["incidents"]["open"]) == SHOWN_INCIDENTS
    assert s["incidents"]["open"][0]["id"] == f"inc-{MAX_OPEN_INCIDENTS + 2}" and s["dropped"] == 3


def test_active_actions_until_they_expire() -> None:
    board = OpsBoard()
    board.published("security_active", active(("block_ip", "203.0.113.9", T0 + 60),
                                              ("block_ip", "198.51.100.7", T0 + 5),
                                              ("suspend_user", "mallory", None)))
    s = board.summary(T0 + 10)["actions"]
    assert [(a["action"], a["target"], a["until"]) for a in s["active"]] == [
        ("block_ip", "203.0.113.9", "2023-11-14T22:14:20Z"), ("suspend_user", "mallory", None)]
    assert s["byAction"] == {"block_ip": 1, "suspend_user": 1}


def test_series_and_view_from_the_summary() -> None:
    board = OpsBoard()
    board.alerts_sent(alerts_for_breaker({"service": "Payments", "to": "open"}, "c1", T0), T0)
    board.published("incident", incident("inc-1", severity="critical"))
    board.published("security_active", active(("block_ip", "203.0.113.9", T0 + 60)))
    status = {"health": {"clusterId": "c1", "status": "healthy", "services": {}}, "ops": board.summary(T0 + 1)}
    fams = {f.name: {s.labels: s.value for s in f.samples} for f in ops_families(status, "c1")}
    assert fams["sfa_ops_alerts"][(("cluster", "c1"), ("severity", "error"))] == 1.0
    assert fams["sfa_ops_alerts"][(("cluster", "c1"), ("severity", "info"))] == 0.0
    assert fams["sfa_ops_open_incidents"][(("cluster", "c1"), ("severity", "critical"))] == 1.0
    assert fams["sfa_ops_active_actions"] == {(("action", "block_ip"), ("cluster", "c1")): 1.0}
    view = status_view(status, age_s=0.5)
    assert [i["id"] for i in view["incidents"]] == ["inc-1"] and view["incidentsTotal"] == 1
    assert [a["target"] for a in view["actions"]] == ["203.0.113.9"]
    assert [a["alertname"] for a in view["alerts"]] == ["CircuitBreakerOpen"] and view["alertsFiring"] == 1
    # A source without the summary (the retained health alone) says unknown, not "none".
    bare = status_view({"health": status["health"]}, age_s=0.5)
    assert bare["incidents"] is None and bare["actions"] is None and bare["alerts"] is None
    assert ops_families({"health": {}}, "c1") == []


def test_open_incidents_restored_from_the_store_records() -> None:
    from adapters.store import IncidentRecord

    board = OpsBoard()
    board.restore_incidents([IncidentRecord(id="inc-9", type="security", severity="critical", title="t",
                                            source="203.0.113.9", status="escalated", created_at=T0)])
    board.published("incident", incident("inc-9", event="updated", status="contained", at=T0 + 30))
    [row] = board.summary(T0 + 31)["incidents"]["open"]
    assert (row["id"], row["state"], row["openedAt"]) == ("inc-9", "contained", "2023-11-14T22:13:20Z")


def test_store_read_replaces_incidents_unless_a_message_came_meanwhile() -> None:
    from adapters.store import IncidentRecord

    board = OpsBoard()
    board.published("incident", incident("inc-1"))
    board.published("incident", incident("inc-2"))
    still_open = [IncidentRecord(id="inc-2", type="security", severity="error", title="t", created_at=T0)]
    changes = board.incident_changes
    board.published("incident", incident("inc-3"))  # arrives while the store is read: that read is stale
    assert board.restore_incidents(still_open, changes=changes) is False
    assert {i["id"] for i in board.summary(T0)["incidents"]["open"]} == {"inc-1", "inc-2", "inc-3"}
    # inc-1 was resolved by an operator straight in the store: the next read drops it
    assert board.restore_incidents(still_open, changes=board.incident_changes) is True
    assert [i["id"] for i in board.summary(T0)["incidents"]["open"]] == ["inc-2"]
