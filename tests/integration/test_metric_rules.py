"""Embedded alerting rules: operate (real Ray, real mosquitto) evaluates metric_rules.yaml on its own
series; a service failing its calls crosses the error-ratio threshold and the alert reaches
``system/{cluster}/alerts`` through the usual alert routing, as the alert manager's ``mqtt``
receiver published it; ``--no-metric-rules`` turns the evaluation off."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import pytest
import ray

from protocol import parse_model
from protocol.security import AlertMessage
from sdk import ServiceClient
from sdk.errors import ServiceException, ServiceTemporarilyUnavailableException
from tests.support.operations import Operations, ServiceProcess, operations

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("ray_session")]

ALERTING = """
route:
  receiver: bus
  group_by: [alertname, service]
  group_wait: 0s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - {name: bus, type: mqtt}
"""
# The shipped rule's shape with a short `for` and interval, so the test takes seconds.
RULES = """
interval: 500ms
rules:
  - alert: ServiceErrorRatioHigh
    value: {kind: gauge, series: sfa_ops_service_error_ratio}
    op: ">"
    threshold: 0.1
    for: 1s
    severity: error
    labels: {component: service}
    summary: "{{ $labels.service }}: {{ $value | humanizePercentage }} of calls fail"
"""
POLICIES = {
    "alerting.yaml": ALERTING,
    "metric_rules.yaml": RULES,
    # A short error window, so that the ratio falls back below the threshold within seconds.
    "circuit_breaker.yaml": ("defaults:\n  minimum_calls: 5\n  window: 4s\n  open_timeout: 1s\n"
                             "  half_open_max_calls: 2\n  half_open_success_threshold: 2\n"),
}


def rule_alerts(ops: Operations, service: str) -> list[AlertMessage]:
    """Alerts of the metric rule for ``service``, parsed with the protocol model."""
    out = []
    for doc in ops.watcher.on("/alerts"):
        msg = parse_model(AlertMessage, doc)
        if msg.labels.get("alertname") == "ServiceErrorRatioHigh" and msg.labels.get("service") == service:
            out.append(msg)
    return out


async def supervisor_status(ops: Operations) -> dict[str, Any]:
    handle = ray.get_actor(f"sfa-supervisor-{ops.cluster}", namespace="sfa-ops")
    status: dict[str, Any] = await handle.status.remote()
    return status


async def fail_calls(client: ServiceClient, service: str, n: int) -> None:
    for _ in range(n):
        with pytest.raises((ServiceException, ServiceTemporarilyUnavailableException)):
            await client.call(service, "fail", {}, timeout=5)


async def test_error_ratio_rule_fires_and_resolves_through_routing(
        broker_url: str, tmp_path: Path, client: ServiceClient, procs: list[ServiceProcess]) -> None:
    """Every call failing: ServiceErrorRatioHigh fires once (labels from the series and the rule,
    the summary rendered), published by the mqtt receiver; calls succeeding again resolve it."""
    async with operations(broker_url, tmp_path, policies=POLICIES) as ops:
        procs.append(ServiceProcess(broker_url, ops.cluster, "Billing").start())
        assert await client.call("Billing", "ok", {}, timeout=5) == {"ok": True, "service": "Billing"}
        await fail_calls(client, "Billing", 6)
        firing = await ops.watcher.wait(
            lambda w: [m for m in rule_alerts(ops, "Billing") if m.status == "firing"], 20, "the rule's alert")
        alert = firing[0]
        assert alert.receiver == "bus" and alert.cluster_id == ops.cluster
        assert alert.labels == {"alertname": "ServiceErrorRatioHigh", "severity": "error", "component": "service",
                                "service": "Billing", "cluster": ops.cluster}
        assert alert.annotations["summary"].startswith("Billing: ") and alert.annotations["summary"].endswith(
            "% of calls fail")
        assert alert.ends_at is None
        assert (await supervisor_status(ops))["metricRules"]["firing"] == 1

        async def healthy_calls() -> None:
            while True:
                # While the breaker is open or half-open sfa-ops answers first (-32503).
                with contextlib.suppress(ServiceTemporarilyUnavailableException):
                    await client.call("Billing", "ok", {}, timeout=5)
                await asyncio.sleep(0.2)  # paces the traffic; the wait below is on the resolution

        caller = asyncio.create_task(healthy_calls())
        try:
            resolved = await ops.watcher.wait(
                lambda w: [m for m in rule_alerts(ops, "Billing") if m.status == "resolved"], 30, "the resolution")
        finally:
            caller.cancel()
        assert resolved[0].labels == alert.labels and resolved[0].ends_at is not None
        assert resolved[0].starts_at == alert.starts_at


async def test_no_metric_rules_turns_the_evaluation_off(
        broker_url: str, tmp_path: Path, client: ServiceClient, procs: list[ServiceProcess]) -> None:
    """With --no-metric-rules the same failures raise the breaker's alert but not the rule's."""
    async with operations(broker_url, tmp_path, policies=POLICIES, extra={"no_metric_rules": True}) as ops:
        procs.append(ServiceProcess(broker_url, ops.cluster, "Billing").start())
        await fail_calls(client, "Billing", 6)
        await ops.watcher.wait(
            lambda w: [d for d in w.on("/alerts") if d.get("labels", {}).get("alertname") == "CircuitBreakerOpen"],
            20, "the breaker's alert (routing works)")
        assert (await supervisor_status(ops))["metricRules"] is None
        assert rule_alerts(ops, "Billing") == []
