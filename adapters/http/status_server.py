"""operate's HTTP endpoint (``--http HOST:PORT``): a live status page, ``/status.json``,
Prometheus ``/metrics``, and ``/healthz`` / ``/readyz`` for Kubernetes probes.

The driver hands it the supervisor's status once a second (:meth:`StatusServer.update`); every
request is answered from that snapshot, so no request reaches an actor. The page is static HTML
and JavaScript that polls ``/status.json``; it sets every value as text, and the Content Security
Policy allows scripts from this server only.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from policies.supervision.status_view import STALE_AFTER_S, metric_families, status_view

PAGE_DIR = Path(__file__).with_name("status_page")
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
                               "img-src 'self' data:; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


class _SnapshotCollector:
    """prometheus_client collector over the latest snapshot (the exposition format is theirs)."""

    def __init__(self, server: StatusServer) -> None:
        self.server = server

    def collect(self) -> Iterator[Metric]:
        for family in metric_families(self.server.snapshot, age_s=self.server.age()):
            if family.kind == "histogram":
                histogram = Metric(family.name, family.help, "histogram")
                for sample in family.samples:
                    histogram.add_sample(family.name + sample.suffix, dict(sample.labels), sample.value)
                yield histogram
                continue
            labels = sorted({k for s in family.samples for k, _ in s.labels})
            metric: GaugeMetricFamily | CounterMetricFamily
            if family.kind == "counter":
                metric = CounterMetricFamily(family.name, family.help, labels=labels)
            else:
                metric = GaugeMetricFamily(family.name, family.help, labels=labels)
            for sample in family.samples:
                values = dict(sample.labels)
                metric.add_metric([values.get(k, "") for k in labels], sample.value)
            yield metric


class StatusServer:
    def __init__(self, host: str, port: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.host, self.port = host, port
        self.clock = clock
        self.snapshot: dict[str, Any] | None = None
        self.updated_at: float | None = None
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_SnapshotCollector(self))
        self._runner: web.AppRunner | None = None

    def update(self, status: Mapping[str, Any]) -> None:
        self.snapshot = dict(status)
        self.updated_at = self.clock()

    def age(self) -> float | None:
        return None if self.updated_at is None else max(0.0, self.clock() - self.updated_at)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    async def start(self) -> str:
        app = web.Application()
        app.router.add_get("/", self._page)
        app.router.add_get("/status.js", self._script)
        app.router.add_get("/status.json", self._status)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        if self.port == 0:  # an ephemeral port: report the one the OS gave
            self.port = int(self._runner.addresses[0][1])
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- handlers ---------------------------------------------------------------------------------

    async def _page(self, _: web.Request) -> web.Response:
        return web.Response(body=(PAGE_DIR / "index.html").read_bytes(), content_type="text/html",
                            charset="utf-8", headers=SECURITY_HEADERS)

    async def _script(self, _: web.Request) -> web.Response:
        return web.Response(body=(PAGE_DIR / "status.js").read_bytes(), content_type="text/javascript",
                            charset="utf-8", headers=SECURITY_HEADERS)

    async def _status(self, _: web.Request) -> web.Response:
        body = orjson.dumps(status_view(self.snapshot, age_s=self.age()))
        return web.Response(body=body, content_type="application/json", headers=SECURITY_HEADERS)

    async def _metrics(self, _: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.registry),
                            headers={"Content-Type": CONTENT_TYPE_LATEST, "Cache-Control": "no-store"})

    async def _healthz(self, _: web.Request) -> web.Response:
        """Alive: this process answers (the driver's event loop is running)."""
        return web.Response(text="ok\n")

    async def _readyz(self, _: web.Request) -> web.Response:
        """Ready: the supervisor answered within the last few seconds."""
        age = self.age()
        if age is not None and age <= STALE_AFTER_S:
            return web.Response(text="ready\n")
        why = "no status yet" if age is None else f"status is {age:.0f} s old"
        return web.Response(status=503, text=f"not ready: {why}\n")
