"""A monitor rebuilt from its saved snapshot judges health as the one that never stopped: a degraded
service whose breaker is still open is not announced recovered after the restart, and recovers when
its window says so; a corrupt saved document is refused and counted, never raised."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from policies.breaker.outcomes import UNANSWERED
from policies.breaker.settings import load_breaker_policy
from policies.health.monitor import WINDOW_SAVE_INTERVAL_S, MonitorCore, MonitorResult
from policies.health.status import load_health_policy
from policies.health.window_state import MAX_SEGMENTS
from policies.observation.correlation import ServiceDelta

TICK = 0.25


def core(now: float = 0.0, restored: dict[str, Any] | None = None) -> MonitorCore:
    settings = load_breaker_policy().for_service("A").model_copy(update={"open_timeout": 5.0})
    return MonitorCore(service="A", cluster_id="c", breaker=settings, health=load_health_policy(), now=now,
                       restored=restored)


def delta(outcomes: list[tuple[float, int | None]] | None = None) -> ServiceDelta:
    outcomes = outcomes or []
    return ServiceDelta("A", calls=len(outcomes), outcomes=outcomes, methods={"getUser": len(outcomes)})


def saved(r: MonitorResult, last: dict[str, Any] | None) -> dict[str, Any] | None:
    """The latest snapshot the actor would have written (through JSON, as the store keeps it)."""
    return json.loads(json.dumps(r.snapshot)) if r.snapshot is not None else last


def degrade(m: MonitorCore, outcome: tuple[float, int | None], until: float) -> dict[str, Any]:
    """Failing calls every tick from t=1 to ``until``; returns the latest saved snapshot."""
    last: dict[str, Any] | None = None
    t = 1.0
    while t <= until:
        last = saved(m.apply([delta([outcome] * 10)], now=t), last)
        t += TICK
    assert last is not None
    return last


def ticks(m: MonitorCore, start: float, end: float) -> list[tuple[float, str]]:
    """Quiet ticks (the open breaker lets no call through): the health messages announced."""
    out = []
    t = start
    while t <= end:
        r = m.apply([delta()], now=t)
        if r.health_message is not None:
            out.append((t, r.health_message["type"]))
        t += TICK
    return out


@pytest.mark.parametrize(("outcome", "reason"), [((0.01, -32603), "high_error_rate"),
                                                  ((30.0, UNANSWERED), "poor_response_rate"),
                                                  ((8.0, None), "high_latency")])
def test_restored_degraded_monitor_announces_no_false_recovery(outcome: tuple[float, int | None],
                                                                reason: str) -> None:
    """Degraded (breaker open), killed at t=20, rebuilt from the last saved snapshot at t=21: the same
    status, breaker and error rate as the monitor that never stopped, and no service_recovered
    while the window still says degraded: it recovers when the last saved calls leave the window,
    within a few seconds of the monitor that never stopped."""
    m = core()
    snap = degrade(m, outcome, until=20.0)
    assert m.health_state.announced.value == "degraded" and reason in m.health_state.reasons
    again = core(now=21.0, restored=snap)
    assert again.restore_refused == 0
    r_old, r_new = m.apply([delta()], now=21.0), again.apply([delta()], now=21.0)
    assert r_new.summary["status"] == r_old.summary["status"] == "degraded"
    assert r_new.summary["breaker"] == r_old.summary["breaker"] == "open"
    assert r_new.summary["errorRate"] == pytest.approx(r_old.summary["errorRate"], abs=0.01)
    assert r_new.health_message is None
    assert ticks(again, 21.25, 130.0) == []
    uninterrupted = ticks(m, 21.25, 150.0)
    restarted = ticks(again, 130.25, 150.0)
    assert [k for _, k in restarted] == [k for _, k in uninterrupted] == ["service_recovered"]
    # Earlier by at most the calls after the last save, later by at most one 6-second saved segment.
    assert -6.0 - TICK <= uninterrupted[0][0] - restarted[0][0] <= WINDOW_SAVE_INTERVAL_S + TICK


def test_restored_after_the_window_expired_recovers() -> None:
    """Rebuilt long after the last failing call (its window has expired): recovered after the usual
    damping (two evaluations), as the monitor that never stopped did."""
    m = core()
    snap = degrade(m, (0.01, -32603), until=10.0)
    again = core(now=200.0, restored=snap)
    assert again.window.snapshot(200.0).calls == 0
    assert ticks(again, 200.0, 201.0) == [(200.25, "service_recovered")]


def test_old_snapshot_without_window_still_restores() -> None:
    """A snapshot saved before the window was kept: breaker and health back, nothing refused."""
    m = core()
    snap = degrade(m, (0.01, -32603), until=3.0)
    for key in ("window", "lastSuccess", "started"):
        snap.pop(key)
    snap["health"] = {k: snap["health"][k] for k in ("announced", "reasons", "since")}
    again = core(now=4.0, restored=snap)
    assert again.restore_refused == 0
    assert again.breaker.state.value == "open" and again.health_state.announced.value == "degraded"


def test_window_saved_while_it_matters_not_for_every_tick() -> None:
    """Failing calls every tick for 30 s: the window is saved about every 5 s (not every tick); a
    busy healthy service saves nothing for its window."""
    m = core()
    saves = [t for t in (1.0 + i * TICK for i in range(120))
             if m.apply([delta([(0.01, -32603)] * 10)], now=t).snapshot is not None]
    assert 30.0 / WINDOW_SAVE_INTERVAL_S <= len(saves) <= 30.0 / WINDOW_SAVE_INTERVAL_S + 4, saves
    healthy = core()
    busy = [t for t in (1.0 + i * TICK for i in range(120))
            if healthy.apply([delta([(0.01, None)] * 100)], now=t).snapshot is not None]
    assert busy == []


def test_back_to_healthy_window_is_saved_once() -> None:
    """A few failures make the window say degraded for one evaluation (not announced), then good
    calls dilute them: both turns are saved, so the saved window is never a stale degraded one."""
    m = core()
    m.apply([delta([(0.01, None)] * 5)], now=1.0)
    turned = m.apply([delta([(0.01, -32603)] * 2)], now=1.25)
    assert turned.snapshot is not None and turned.health is None
    back = m.apply([delta([(0.01, None)] * 100)], now=1.5)
    assert back.snapshot is not None
    assert m.apply([delta([(0.01, None)] * 100)], now=7.0).snapshot is None


HOSTILE: list[tuple[str, object]] = [
    ("window", {"v": 1, "a": 0.01, "s": [[1.0, 5, 0, math.nan, [], 0, 0, 0, []]]}),
    ("window", {"v": 1, "a": 0.01, "s": [[1.0, 5, 0, 0.0, [], 0, 0, 0, []]] * 100_000}),
    ("window", "garbage"),
    ("downSince", "yesterday"),
    ("lastSuccess", math.inf),
    ("started", 1e30),
    ("health", {"announced": "sick"}),
    ("health", {"announced": "degraded", "reasons": "high_error_rate"}),
    ("health", {"announced": "degraded", "candidate": "x", "candidateCount": -5}),
    ("breaker", {"version": 1, "state": "nope"}),
]


@pytest.mark.parametrize(("key", "value"), HOSTILE)
def test_corrupt_snapshot_is_refused_and_counted(key: str, value: object) -> None:
    """Each corrupt field is refused (counted in ``restore_refused``), the rest restores and the
    monitor keeps working."""
    m = core()
    snap = degrade(m, (0.01, -32603), until=3.0)
    snap[key] = value
    again = core(now=4.0, restored=snap)
    assert again.restore_refused >= 1
    again.apply([delta([(0.01, None)])], now=4.25)
    assert again.window.snapshot(4.25).calls <= 1 + max(10 * 9, 5 * MAX_SEGMENTS)  # the clamped list: 24 kept
    assert len(json.dumps(again.snapshot())) < 20_000


def test_oversized_lists_are_clamped() -> None:
    m = core()
    snap = degrade(m, (0.01, -32603), until=3.0)
    snap["methods"] = [f"m{i}" for i in range(1_000_000)]
    snap["health"]["reasons"] = ["high_error_rate"] * 100_000
    again = core(now=4.0, restored=snap)
    assert len(again.methods) == 100 and len(again.health_state.reasons) == 16
