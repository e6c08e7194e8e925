"""EMQX 5 management API (``/api/v5``): :class:`EmqxClient` and the ``emqx_cluster`` probe.

Authentication is HTTP basic with an API key and secret (EMQX dashboard → API keys). Shapes
follow EMQX v5.8 (see tests/fixtures/emqx/SOURCES.md): ``/nodes`` lists stopped nodes with only
``node``, ``node_status`` and ``role``; memory figures are strings like ``"15.49G"``.

Errors::

    ProbeError (adapters.probes)
     ├── EmqxApiError        a non-2xx answer other than 401/403, or a body that is not JSON
     └── ProbeConfigError
          └── EmqxAuthError  401/403: the API key or secret is wrong
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from adapters.http.client import HttpClient, HttpError
from adapters.probes import (
    ProbeConfigError,
    ProbeError,
    ProbeResult,
    ProbeSet,
    ProbeSetup,
    Problem,
    run_check,
)
from adapters.runtime.urls import redact_url
from policies.infrastructure.thresholds import EmqxThresholds

COMPONENT = "emqx_cluster"
API_KEY_SETTING = "emqx.api_key / emqx.api_secret (SFA_OPS_EMQX_API_KEY / SFA_OPS_EMQX_API_SECRET)"
_KMG = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)\s*$")
_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


class EmqxApiError(ProbeError):
    """EMQX answered with an error status or an unreadable body."""


class EmqxAuthError(ProbeConfigError):
    """EMQX refused our API key (401/403): a configuration error, not a broker failure."""


def parse_memory(value: object) -> int:
    """EMQX memory figures (``emqx_mgmt_util:kmg/1``: ``"15.49G"``, ``"512.00M"``, ``"0"``, or a
    plain byte count below 1 KiB) → bytes (units are binary: 1K = 1024)."""
    if isinstance(value, bool):
        raise ValueError(f"not an EMQX memory figure: {value!r}")
    if isinstance(value, int | float):
        return int(value)
    if isinstance(value, str):
        m = _KMG.match(value)
        if m:
            return round(float(m.group(1)) * _UNITS[m.group(2)])
    raise ValueError(f"not an EMQX memory figure: {value!r}")


class EmqxClient:
    """GET helpers for the EMQX v5 API; every method raises :class:`EmqxAuthError`,
    :class:`EmqxApiError` or ``adapters.http.client.HttpUnreachable``."""

    def __init__(self, *, base_url: str, api_key: str, api_secret: str, timeout: float = 5.0) -> None:
        self._http = HttpClient(base_url=base_url, timeout_s=timeout, username=api_key, password=api_secret)
        self.base_url = base_url.rstrip("/")

    async def _get(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        resp = await self._http.get(f"/api/v5/{path.lstrip('/')}", params=params)
        if resp.status in (401, 403):
            code = _error_code(resp.body)
            raise EmqxAuthError(f"EMQX API at {redact_url(self.base_url)} rejected the credentials (HTTP {resp.status}"
                                f"{' ' + code if code else ''}): check the setting {API_KEY_SETTING}")
        if not 200 <= resp.status < 300:
            raise EmqxApiError(f"EMQX GET /api/v5/{path} answered HTTP {resp.status}: {resp.body[:200]!r}")
        try:
            return resp.json()
        except HttpError as exc:
            raise EmqxApiError(str(exc)) from exc

    async def nodes(self) -> list[dict[str, Any]]:
        return list(await self._get("nodes"))

    async def node_stats(self, node: str) -> dict[str, Any]:
        return dict(await self._get(f"nodes/{node}/stats"))

    async def stats(self) -> list[dict[str, Any]]:
        return list(await self._get("stats"))

    async def metrics(self) -> list[dict[str, Any]]:
        """Per-node metrics (EMQX's default ``aggregate=false``)."""
        doc = await self._get("metrics")
        return [doc] if isinstance(doc, dict) else list(doc)

    async def alarms(self, *, activated: bool = True) -> list[dict[str, Any]]:
        doc = await self._get("alarms", {"activated": "true" if activated else "false"})
        return list(doc.get("data", [])) if isinstance(doc, dict) else list(doc)

    async def cluster(self) -> dict[str, Any]:
        return dict(await self._get("cluster"))

    async def status(self) -> dict[str, Any]:
        """``/api/v5/status?format=json`` (no auth needed); 503 when the broker is not running."""
        resp = await self._http.get("/api/v5/status", params={"format": "json"})
        try:
            doc = resp.json()
        except HttpError as exc:
            raise EmqxApiError(str(exc)) from exc
        return dict(doc) | {"httpStatus": resp.status}

    async def close(self) -> None:
        await self._http.close()


def _error_code(body: bytes) -> str:
    try:
        import orjson

        doc = orjson.loads(body)
        return str(doc.get("code", "")) if isinstance(doc, dict) else ""
    except Exception:  # the status alone is enough to report
        return ""


def summarize_cluster(
    nodes: Sequence[Mapping[str, Any]], stats: Mapping[str, Mapping[str, Any]],
    metrics: Sequence[Mapping[str, Any]], alarms: Sequence[Mapping[str, Any]],
    *, thresholds: EmqxThresholds, previous_dropped: int | None,
) -> tuple[dict[str, Any], list[Problem]]:
    """Pure: API documents → seed-shaped details and problems."""
    problems: list[Problem] = []
    node_details: list[dict[str, Any]] = []
    stopped = [str(n.get("node")) for n in nodes if n.get("node_status") != "running"]
    for n in nodes:
        name = str(n.get("node"))
        entry: dict[str, Any] = {"nodeName": name, "status": n.get("node_status"), "role": n.get("role")}
        if n.get("node_status") == "running":
            used, total = parse_memory(n.get("memory_used", 0)), parse_memory(n.get("memory_total", 0))
            pct = round(100.0 * used / total, 2) if total else None
            st = stats.get(name, {})
            entry |= {
                "connectionCount": n.get("connections"), "liveConnections": n.get("live_connections"),
                "sessionCount": st.get("sessions.count"), "subscriptionCount": st.get("subscriptions.count"),
                "memoryUsed": used, "memoryTotal": total, "memoryUsagePercent": pct,
                "load1": n.get("load1"), "uptimeMs": n.get("uptime"), "version": n.get("version"),
                "isHealthy": pct is None or pct < thresholds.node_memory,
            }
            if pct is not None and pct >= thresholds.node_memory:
                problems.append(Problem(code="memory_pressure", severity="warning",
                                        message=f"EMQX node {name} uses {pct:.1f}% of its memory"))
        else:
            entry["isHealthy"] = False
        node_details.append(entry)
    for name in stopped:
        problems.append(Problem(code="node_stopped", severity="critical",
                                message=f"EMQX node {name} disconnected from cluster"))
    dropped = sum(int(m.get("messages.dropped", 0)) for m in metrics)
    delta = None if previous_dropped is None else max(0, dropped - previous_dropped)
    if delta is not None and delta >= thresholds.dropped_per_check:
        problems.append(Problem(code="messages_dropped", severity="warning",
                                message=f"EMQX dropped {delta} messages since the last check"))
    active = [{"node": a.get("node"), "name": a.get("name"), "message": a.get("message"),
               "activatedAt": a.get("activate_at")} for a in alarms]
    for a in active:
        problems.append(Problem(code="alarm_active", severity="warning",
                                message=f"EMQX alarm {a['name']} on {a['node']}: {a['message']}"))
    details = {
        "runningNodes": len(nodes) - len(stopped), "totalNodes": len(nodes),
        "disconnectedNode": stopped[0] if stopped else None, "disconnectedNodes": stopped,
        "clusterState": "degraded" if stopped else "healthy",
        "connectionCount": sum(int(n.get("connections", 0)) for n in nodes),
        "messagesDropped": dropped, "droppedSinceLastCheck": delta,
        "activeAlarms": active, "nodeDetails": node_details,
    }
    return details, problems


class EmqxProbe:
    """``emqx_cluster``: nodes (running vs total), per-node stats and memory, dropped messages
    (growth between checks), active alarms. EMQX's API has no cluster-wide queue length, so the
    seed's ``messageBacklog`` is not reported; ``droppedSinceLastCheck`` is the nearest signal."""

    component = COMPONENT

    def __init__(self, *, client: EmqxClient, timeout_s: float, thresholds: EmqxThresholds) -> None:
        self.client = client
        self.timeout_s = timeout_s
        self.thresholds = thresholds
        self._last_dropped: int | None = None

    async def check(self) -> ProbeResult:
        return await run_check(COMPONENT, self.timeout_s, self._body)

    async def _body(self) -> tuple[dict[str, Any], list[Problem]]:
        nodes, metrics, alarms = await asyncio.gather(self.client.nodes(), self.client.metrics(),
                                                      self.client.alarms())
        running = [str(n["node"]) for n in nodes if n.get("node_status") == "running"]
        node_stats = await asyncio.gather(*(self.client.node_stats(n) for n in running))
        details, problems = summarize_cluster(
            nodes, dict(zip(running, node_stats, strict=True)), metrics, alarms,
            thresholds=self.thresholds, previous_dropped=self._last_dropped)
        self._last_dropped = details["messagesDropped"]
        return details, problems

    async def close(self) -> None:
        await self.client.close()


async def build(setup: ProbeSetup) -> ProbeSet:
    """``emqx_cluster``: the broker round trip (``mqtt_broker``'s thresholds) plus the API probe,
    whose result leads the merge."""
    from adapters.probes import mqtt_probe

    s = setup.settings
    built = await mqtt_probe.build(replace(setup, thresholds=setup.policy.thresholds.mqtt_broker))
    client = EmqxClient(base_url=str(s.emqx_api), api_key=s.emqx_api_key or "", api_secret=s.emqx_api_secret or "",
                        timeout=setup.timeout)
    built.probes["api"] = EmqxProbe(client=client, timeout_s=setup.timeout, thresholds=setup.thresholds)
    built.primary = "api"
    return built
