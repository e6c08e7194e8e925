"""operate's HTTP endpoint with real consumers: a real Prometheus scrapes ``/metrics`` and answers
queries for the breaker that opened and the failed calls (by code, and in the duration histogram);
every query of the Grafana dashboard evaluates there; the same series reach Ray's own metrics export
(scraped from the session Ray's node); headless Chromium shows the status page change live (no reload,
no console errors) while the breaker opens and closes, while failed logins (as the auth service
publishes them) become an open incident and a block_ip action, and while the breaker's alert fires
and resolves; ``/healthz``, ``/readyz`` and ``/status.json`` answer as Kubernetes probes and scripts
expect; ``drivers.status`` shows the same from the retained, signed health summary and active set
(and refuses them under another key). The screenshot of the page with the open breaker, the
incident, the action and the alert is kept in ``var/test-artifacts/``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import ray
from prometheus_client.parser import text_string_to_metric_families

from adapters.mqtt.signing import ensure_key_pair, public_key_path
from adapters.runtime.processes import free_port, start_prometheus
from policies.security.broker_acl import CALLER
from protocol import topics
from protocol.base import utc_now
from protocol.security import AuthEvent
from sdk import ServiceClient
from sdk.errors import ServiceCallError, ServiceException
from tests.support.broker import child_login
from tests.support.chromium import open_page
from tests.support.operations import ServiceProcess, operations

pytestmark = pytest.mark.usefixtures("ray_session")

ARTIFACTS = Path(__file__).resolve().parents[2] / "var" / "test-artifacts"
DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "sfa-ops-dashboard.json"
ROW = 'document.querySelector(\'#services tr[data-service="Payments"] td:nth-child(3)\')?.textContent ?? null'
ATTACKER_IP = "203.0.113.77"  # TEST-NET-3


def rows(table: str) -> str:
    """Script: the text of every cell of every row of a table on the page."""
    return f"[...document.querySelectorAll('#{table} tbody tr')].map(r => [...r.children].map(c => c.textContent))"


def text(element_id: str) -> str:
    return f"document.getElementById('{element_id}').textContent"


async def until(check: Callable[[], Awaitable[Any]], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


async def test_status_page_metrics_and_probes(broker_url: str, tmp_path: Path, client: ServiceClient,
                                              procs: list[ServiceProcess]) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    policies = {"circuit_breaker.yaml": "defaults:\n  minimum_calls: 5\n  window: 30s\n  open_timeout: 4s\n"
                                        "  half_open_max_calls: 2\n  half_open_success_threshold: 2\n"}
    key = tmp_path / "keys" / "system.key"
    ensure_key_pair(key)
    extra = {"http": ("127.0.0.1", port), "signing_key": str(key)}
    async with operations(broker_url, tmp_path, policies=policies, extra=extra) as ops, \
            aiohttp.ClientSession() as http:
        prometheus = start_prometheus(targets=[f"127.0.0.1:{port}"], scrape_interval="1s")
        try:
            async def get(path: str) -> tuple[int, str]:
                async with http.get(base + path) as res:
                    return res.status, await res.text()

            async def breaker_in_prometheus() -> Any:
                query = f'sfa_ops_breaker_state{{cluster="{ops.cluster}",service="Payments"}}'
                async with http.get(f"{prometheus.url}/api/v1/query", params={"query": query}) as res:
                    found = (await res.json())["data"]["result"]
                return found and float(found[0]["value"][1]) == 2.0

            async def in_prometheus(query: str) -> float | None:
                async with http.get(f"{prometheus.url}/api/v1/query", params={"query": query}) as res:
                    found = (await res.json())["data"]["result"]
                return float(found[0]["value"][1]) if found else None

            async def failed_calls_in_prometheus() -> bool:
                # The fail calls answered -32603 by the service (the last may be refused -32503 once
                # the breaker opened), and every answered call in the duration histogram.
                labels = f'cluster="{ops.cluster}",service="Payments"'
                failed = await in_prometheus(f'sfa_ops_calls_total{{{labels},code="-32603"}}')
                answered = await in_prometheus(f"sfa_ops_call_duration_seconds_count{{{labels}}}")
                return failed is not None and failed >= 5 and answered is not None and answered >= 6

            assert await get("/healthz") == (200, "ok\n")
            await until(lambda: _ok(get("/readyz")), 30, "/readyz 200")
            procs.append(ServiceProcess(broker_url, ops.cluster, "Payments").start())
            assert await client.call("Payments", "ok", {}, timeout=5) == {"ok": True, "service": "Payments"}
            async with open_page(base + "/") as page:
                await until(lambda: page.evaluate(ROW), 30, "Payments on the page")
                assert await page.evaluate(ROW) == "closed"
                assert await page.evaluate(text("incidents-empty")) == "no open incidents"
                assert await page.evaluate(text("alerts-empty")) == "no recent alerts"
                await page.evaluate("window.sfaFirstLoad = true")  # gone if the page reloads
                for i in range(6):  # failed logins as the auth service publishes them → brute force
                    event = AuthEvent(user_id=f"victim-{i}", ip_address=ATTACKER_IP, success=False,
                                      timestamp=utc_now(), method="password", reason="invalid_credentials")
                    await ops.bus.publish(topics.security_auth("login"), event.to_wire(), qos=1)
                for _ in range(6):
                    with contextlib.suppress(ServiceException):
                        await client.call("Payments", "fail", {}, timeout=5)
                await until(lambda: _equals(page.evaluate(ROW), "open"), 15, "the page showing the open breaker")

                async def row_with(table: str, value: str) -> list[str] | None:
                    return next((r for r in await page.evaluate(rows(table)) if value in r), None)
                incident = await until(lambda: row_with("incidents", ATTACKER_IP), 30, "the incident on the page")
                assert incident[1] in ("error", "critical", "emergency") and incident[5] != "resolved"
                action = await until(lambda: row_with("actions", ATTACKER_IP), 30, "block_ip on the page")
                assert action[0] == "block_ip" and action[2] != "no expiry"
                alert = await until(lambda: row_with("alerts", "CircuitBreakerOpen"), 15, "the alert on the page")
                assert alert[2:4] == ["error", "Payments"] and alert[5] == "firing"
                assert await page.evaluate(text("incidents-empty")) == ""
                ARTIFACTS.mkdir(parents=True, exist_ok=True)
                await page.screenshot(ARTIFACTS / "status-page-breaker-open.png", full_page=True)

                await until(breaker_in_prometheus, 30, "Prometheus scraping breaker state 2 for Payments")
                await until(failed_calls_in_prometheus, 30, "Prometheus scraping Payments' failed calls")
                await until(lambda: _dashboard_queries_evaluate(http, prometheus.url, ops.cluster), 30,
                            "every dashboard query valid, and p95 latency for Payments from the histogram")
                status, metrics = await get("/metrics")
                assert status == 200 and "sfa_ops_observed_total" in metrics
                assert f'sfa_ops_breaker_state{{cluster="{ops.cluster}",service="Payments"}} 2.0' in metrics
                assert _value(metrics, f'sfa_ops_active_actions{{action="block_ip",cluster="{ops.cluster}"}}') >= 1
                assert _value(metrics, f'sfa_ops_alerts_total{{cluster="{ops.cluster}",severity="error"}}') >= 1
                assert _value(metrics, f'sfa_ops_open_incidents{{cluster="{ops.cluster}",severity="info"}}') == 0
                async with http.get(base + "/status.json") as res:
                    view = await res.json()
                assert view["ready"] is True and view["cluster"] == ops.cluster
                assert [s["breaker"] for s in view["services"] if s["service"] == "Payments"] == ["open"]
                assert ATTACKER_IP in {i["source"] for i in view["incidents"]}
                assert ("block_ip", ATTACKER_IP) in {(a["action"], a["target"]) for a in view["actions"]}
                assert "CircuitBreakerOpen" in {a["alertname"] for a in view["alerts"]}

                # The terminal view reads the same from the retained, signed health summary.
                # (as the platform's `caller` principal, which may read system/{c}/#)
                viewer_url, viewer_env = child_login(broker_url, CALLER)
                env = {**os.environ, **viewer_env}
                cli = await asyncio.to_thread(
                    subprocess.run, [sys.executable, "-m", "drivers.status", "--broker", viewer_url,
                                     "--cluster-id", ops.cluster, "--trust", str(public_key_path(key)), "--json"],
                    capture_output=True, text=True, timeout=60, env=env)
                assert cli.returncode == 0, cli.stderr
                shown = json.loads(cli.stdout)
                assert [s["breaker"] for s in shown["services"] if s["service"] == "Payments"] == ["open"]
                assert ("block_ip", ATTACKER_IP) in {(a["action"], a["target"]) for a in shown["actions"]}
                assert shown["incidents"] is None and shown["alerts"] is None  # not retained: not shown
                wrong_key = tmp_path / "keys" / "other.key"
                ensure_key_pair(wrong_key)
                refused = await asyncio.to_thread(
                    subprocess.run, [sys.executable, "-m", "drivers.status", "--broker", viewer_url,
                                     "--cluster-id", ops.cluster, "--trust", str(public_key_path(wrong_key)),
                                     "--timeout", "2s"], capture_output=True, text=True, timeout=60, env=env)
                assert refused.returncode == 1 and "unknown_key" in refused.stderr

                async def closed_after_ok_call() -> bool:
                    # sfa-ops observes, it is not in the path: calls go on after open_timeout, and the
                    # half-open breaker closes on the successes it sees.
                    with contextlib.suppress(ServiceCallError):
                        await client.call("Payments", "ok", {}, timeout=5)
                    return await page.evaluate(ROW) == "closed"
                await until(closed_after_ok_call, 30, "the page showing the breaker closed again")
                await until(lambda: _equals(_state(row_with("alerts", "CircuitBreakerOpen")), "resolved"), 15,
                            "the alert resolved on the page")
                assert await page.evaluate("window.sfaFirstLoad") is True, "the page reloaded"
                assert page.errors == []
            await until(lambda: _in_ray_export(http, ops.cluster), 60, "the series on Ray's metrics export")
        finally:
            prometheus.stop()


async def _dashboard_queries_evaluate(http: aiohttp.ClientSession, prometheus: str, cluster: str) -> bool:
    """Every query of the Grafana dashboard is valid PromQL for this Prometheus (asserted), and the
    latency quantile comes back for Payments from the histogram (returned: ``rate`` needs two scrapes
    of the buckets in its window, so the caller waits for it)."""
    panels = json.loads(DASHBOARD.read_text())["panels"]
    p95_for_payments = False
    for target in [t for p in panels for t in p["targets"]]:
        expr = target["expr"].replace("$cluster", cluster).replace("$__rate_interval", "1m")
        async with http.get(f"{prometheus}/api/v1/query", params={"query": expr}) as res:
            body = await res.json()
        assert body["status"] == "success", (expr, body)
        if "histogram_quantile(0.95" in expr:
            p95_for_payments = any(r["metric"].get("service") == "Payments" for r in body["data"]["result"])
    return p95_for_payments


async def _in_ray_export(http: aiohttp.ClientSession, cluster: str) -> bool:
    """The session Ray's metrics export (Ray names the series ``ray_<name>``) shows Payments' failed
    calls (from the supervisor), its duration histogram (from its monitor) and its breaker state."""
    node = next(n for n in ray.nodes() if n["Alive"])
    async with http.get(f"http://{node['NodeManagerAddress']}:{node['MetricsExportPort']}/metrics") as res:
        text = await res.text()
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.labels.get("cluster") == cluster and s.labels.get("service") == "Payments":
                if s.name == "ray_sfa_ops_calls_total" and s.labels.get("code") != "-32603":
                    continue
                found[s.name] = found.get(s.name, 0.0) + s.value
    return (found.get("ray_sfa_ops_calls_total", 0.0) >= 5
            and found.get("ray_sfa_ops_call_duration_seconds_count", 0.0) >= 6
            and "ray_sfa_ops_breaker_state" in found)


async def _ok(request: Awaitable[tuple[int, str]]) -> bool:
    return (await request)[0] == 200


def _value(metrics: str, series: str) -> float:
    """The value of one series in a Prometheus exposition (AssertionError when absent)."""
    found = [line.rsplit(" ", 1)[1] for line in metrics.splitlines() if line.startswith(series + " ")]
    assert found, f"{series} not in /metrics"
    return float(found[0])


async def _state(row: Awaitable[list[str] | None]) -> str | None:
    found = await row
    return found[5] if found else None


async def _equals(value: Awaitable[Any], expected: Any) -> bool:
    return await value == expected
