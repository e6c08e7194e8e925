"""AlertManager delivery against a real local HTTP receiver and mosquitto, and the actor on real Ray.

The first half calls the delivery functions directly (no Ray); the second runs the actor with a
policy override directory whose receivers point at the test's HTTP receiver.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from adapters.http.client import HttpClient, HttpResponse
from adapters.notify.base import DeliveryContext, Outcome, RetryPolicy
from adapters.notify.delivery import deliver, deliver_notification
from adapters.notify.registry import load_checked_alerting_policy
from adapters.store import open_store
from policies.alerting.policy import (
    Alert,
    Integration,
    Notification,
    NotifyReason,
    parse_time,
)
from protocol.security import AlertMessage
from tests.support.http_receiver import Answer, HttpReceiver, http_receiver
from tests.support.mqtt import Collector, running_bus, wait_until

pytestmark = pytest.mark.integration

FAST = RetryPolicy(attempts=3, backoff_s=0.01, timeout_s=2.0)


def note(*alerts: Alert, resolved: tuple[Alert, ...] = (), receiver: str = "hook") -> Notification:
    return Notification(
        receiver=receiver, group_key='{}:{alertname="Down"}', route_id="route", group_labels={"alertname": "Down"},
        firing=alerts, resolved=resolved, due_at=1.0, flushed_at=1.0, reason=NotifyReason.FIRST,
    )


def down(**labels: str) -> Alert:
    return Alert(labels={"alertname": "Down", "severity": "critical", **labels}, starts_at=1_700_000_000.0)


def webhook(url: str, **settings: Any) -> Integration:
    return Integration(type="webhook", settings={"url": url, **settings}, send_resolved=True)


@pytest.fixture
def rx() -> Iterator[HttpReceiver]:
    with http_receiver() as server:
        yield server


@pytest.fixture
async def ctx() -> AsyncIterator[DeliveryContext]:
    poster = HttpClient(timeout_s=2.0)
    yield DeliveryContext(cluster_id="c1", poster=poster, retry=FAST)
    await poster.close()


# ---------------------------------------------------------------- delivery functions, no Ray


@pytest.mark.parametrize(
    ("script", "outcome", "attempts", "permanent"),
    [
        ([200], Outcome.SENT, 1, False),
        ([503, 503, 200], Outcome.SENT, 3, False),
        ([502, 503, 504], Outcome.FAILED, 3, False),
        ([429, 202], Outcome.SENT, 2, False),
        ([400], Outcome.FAILED, 1, True),
        ([404], Outcome.FAILED, 1, True),
        ([Answer(200, delay_s=1.0), 200], Outcome.SENT, 2, False),  # a timeout is retried
    ],
)
async def test_webhook_retry_table(
    rx: HttpReceiver, ctx: DeliveryContext, script: list[Any], outcome: Outcome, attempts: int, permanent: bool,
) -> None:
    """5xx, 429 and timeouts are retried within a delivery; other 4xx fail permanently at once."""
    rx.script(script)
    integ = webhook(f"{rx.url}/hook", timeout="300ms")
    result = await deliver(note(down()), integ, ctx)
    assert (result.outcome, result.attempts, result.permanent) == (outcome, attempts, permanent)
    assert len(rx.received("/hook")) == attempts
    assert result.settled == (outcome is not Outcome.FAILED or permanent)


async def test_backoff_is_exponential(rx: HttpReceiver) -> None:
    """Between tries the delivery waits 0.2 s then 0.4 s (the default policy), no wait after the last."""
    waits: list[float] = []

    async def record(s: float) -> None:
        waits.append(s)

    rx.script([500, 500, 500])
    async with HttpClient() as poster:
        c = DeliveryContext(cluster_id="c1", poster=poster, sleep=record)
        result = await deliver(note(down()), webhook(f"{rx.url}/hook"), c)
    assert result.outcome is Outcome.FAILED and not result.settled
    assert waits == pytest.approx([0.2, 0.4])


async def test_connection_refused_is_a_transient_failure(ctx: DeliveryContext) -> None:
    """Nobody listening counts as a retryable failure, tried `attempts` times."""
    with http_receiver() as gone:
        url = f"{gone.url}/hook"
    result = await deliver(note(down()), webhook(url), ctx)
    assert (result.outcome, result.attempts, result.settled) == (Outcome.FAILED, 3, False)


async def test_redirects_followed_only_within_the_origin(rx: HttpReceiver) -> None:
    """A 307 to the same origin is followed with the body; one to another host is not followed."""
    port = rx.url.rsplit(":", 1)[1]
    rx.script([Answer(307, headers={"Location": "/moved"})], path="/same")
    rx.script([Answer(307, headers={"Location": f"http://localhost:{port}/elsewhere"})], path="/other")
    async with HttpClient() as poster:
        same: HttpResponse = await poster.post_json(f"{rx.url}/same", {"a": 1})
        other = await poster.post_json(f"{rx.url}/other", {"a": 2})
    assert same.status == 200 and same.url.endswith("/moved")
    assert rx.bodies("/moved") == [{"a": 1}]
    assert other.status == 307 and not rx.received("/elsewhere")


async def test_seed_receivers_without_endpoints_are_skipped(ctx: DeliveryContext) -> None:
    """The seed's receivers (Slack channels, PagerDuty template keys, email, phone) have no URL:
    skipped, settled, nothing sent."""
    receiver = load_checked_alerting_policy().receivers["emergency-response"]
    results = await deliver_notification(note(down(), receiver="emergency-response"), receiver.integrations, ctx)
    assert sorted(r.type for r in results.values()) == ["email", "pagerduty", "phone", "slack"]
    assert all(r.outcome is Outcome.SKIPPED and r.settled for r in results.values())


async def test_pagerduty_events_v2_body(rx: HttpReceiver, ctx: DeliveryContext) -> None:
    """A configured PagerDuty integration gets an Events API v2 trigger, then a resolve."""
    integ = Integration(type="pagerduty", settings={"url": f"{rx.url}/pd", "routing_key": "R1"},
                        send_resolved=True)
    a = down(service="orders")
    assert (await deliver(note(a), integ, ctx)).outcome is Outcome.SENT
    assert (await deliver(note(resolved=(a,)), integ, ctx)).outcome is Outcome.SENT
    trigger, resolve = rx.bodies("/pd")
    assert trigger["routing_key"] == "R1" and trigger["event_action"] == "trigger"
    assert len(trigger["dedup_key"]) == 64 and trigger["dedup_key"] == resolve["dedup_key"]
    assert trigger["payload"]["severity"] == "critical" and trigger["payload"]["source"] == "c1"
    assert trigger["payload"]["summary"].startswith("[FIRING:1]")
    assert resolve["event_action"] == "resolve"


# ---------------------------------------------------------------- the actor on Ray

POLICY = """
alerting:
  routes:
{routes}
  receivers:
    - {{name: hook, type: webhook, url: "{url}/hook"}}
    - {{name: hook-b, type: webhook, url: "{url}/hook-b"}}
    - {{name: am, type: alertmanager, url: "{url}"}}
    - name: seedlike   # as the seed's receivers: channels and template keys, no endpoints
      slack: {{channel: "#critical-alerts"}}
      pagerduty: {{service_key: "{{{{ .pagerduty_critical_key }}}}"}}
      email: {{to: [sre-team@company.com]}}
"""
ROUTE = """    - match: {{sink: {sink}}}
      receiver: {sink}
      group_by: [alertname]
      group_wait: 0s
      group_interval: 1s
      repeat_interval: 1h
"""


@dataclass
class Env:
    actor: Any
    rx: HttpReceiver
    cluster: str
    store_url: str
    broker_url: str


@pytest.fixture
async def env(tmp_path: Path, broker_url: str, ray_session: None) -> AsyncIterator[Env]:
    import ray

    from actors.alertmanager import AlertManager
    from actors.settings import OperateSettings

    with http_receiver() as server:
        routes = "".join(ROUTE.format(sink=s) for s in ("hook", "hook-b", "am", "seedlike"))
        (tmp_path / "alerting.yaml").write_text(POLICY.format(routes=routes, url=server.url))
        cluster = f"am{uuid.uuid4().hex[:8]}"
        store_url = f"sqlite:///{tmp_path}/am.db"
        settings = OperateSettings(broker_url=broker_url, cluster_id=cluster, store_url=store_url,
                                   policies_dir=str(tmp_path))
        actor = AlertManager.options(  # type: ignore[attr-defined]
            name=settings.actor_name("alertmanager"), namespace=settings.namespace).remote(settings)
        await actor.start.remote()
        yield Env(actor=actor, rx=server, cluster=cluster, store_url=store_url, broker_url=broker_url)
        try:
            await asyncio.wait_for(actor.stop.remote(), 10)
        finally:
            ray.kill(actor, no_restart=True)


def alert(name: str, sink: str, **extra: Any) -> dict[str, Any]:
    labels = {"alertname": name, "sink": sink, "severity": "error", "component": "service", "service": "orders"}
    return {"labels": labels, "annotations": {"summary": f"{name} fired"}, "startsAt": time.time(), **extra}


async def counters(env: Env, receiver: str) -> dict[str, int]:
    status = await env.actor.status.remote()
    return dict(status["delivery"].get(receiver, {}))


async def test_webhook_payload_mirror_and_enrichment(env: Env) -> None:
    """An alert reaches the webhook as Alertmanager's payload with runbook and recent events, and
    is mirrored as an AlertMessage on system/{cluster}/alerts; so are an unrouted alert and one
    routed to a receiver without endpoints (skipped)."""
    async with running_bus(env.broker_url) as bus:
        got = Collector()
        await bus.subscribe(f"system/{env.cluster}/alerts", got, qos=1)
        await env.actor.note_event.remote({"service": "orders", "type": "service_degraded",
                                           "timestamp": "2024-05-01T12:00:00Z", "message": "p99 up"})
        stray = {"labels": {"alertname": "Stray"}, "startsAt": time.time()}
        batch = [alert("OrdersDown", "hook"), stray, {"labels": {}}, alert("Quiet", "seedlike")]
        result = await env.actor.ingest.remote(batch)
        assert (result["accepted"], result["unrouted"], result["rejected"]) == (3, 1, 1)
        [req] = await env.rx.wait_for(1, path="/hook")
        messages = [AlertMessage.model_validate(orjson.loads(m.payload)) for m in await got.wait_for(3)]
        await got.assert_quiet(0.3)
    body = req.json
    assert (body["version"], body["receiver"], body["status"]) == ("4", "hook", "firing")
    assert body["groupLabels"] == {"alertname": "OrdersDown"}
    [sent] = body["alerts"]
    assert sent["labels"]["alertname"] == "OrdersDown" and sent["endsAt"] == "0001-01-01T00:00:00Z"
    steps = orjson.loads(sent["annotations"]["runbook"])
    assert steps and all({"title", "command", "status"} <= set(s) for s in steps)
    assert orjson.loads(sent["annotations"]["recentEvents"])[-1]["message"] == "p99 up"
    by_receiver = {m.receiver: m for m in messages}
    assert set(by_receiver) == {"hook", "seedlike", None}
    assert by_receiver["seedlike"].labels["alertname"] == "Quiet"
    assert [r.path for r in env.rx.received()] == ["/hook"]
    mirrored = by_receiver["hook"]
    assert mirrored.cluster_id == env.cluster and mirrored.group_key == body["groupKey"]
    assert mirrored.fingerprint == sent["fingerprint"] and mirrored.status == "firing"
    assert mirrored.runbook == steps
    assert by_receiver[None].labels == {"alertname": "Stray"}
    async with open_store(env.store_url) as store:
        stored = {a.labels["alertname"] for a in await store.alerts_list()}
    assert stored == {"OrdersDown", "Stray", "Quiet"}
    assert await counters(env, "hook") == {"sent": 1, "failed": 0, "retried": 0, "skipped": 0}
    assert await counters(env, "seedlike") == {"sent": 0, "failed": 0, "retried": 0, "skipped": 3}
    assert (await counters(env, "mirror"))["sent"] == 3  # two notifications, one unrouted batch


async def test_transient_errors_retried_client_errors_not(env: Env) -> None:
    """503, 503, 200 is delivered once after two retries; a 400 is tried once, counted as failed,
    and not sent again at later group ticks; a silenced alert is not sent at all."""
    env.rx.script([503, 503, 200], path="/hook")
    env.rx.script([400], path="/hook-b")
    now = time.time()
    sid = await env.actor.add_silence.remote({"matchers": ['alertname="Hushed"'], "startsAt": now - 1,
                                              "endsAt": now + 3600, "createdBy": "test"})
    assert sid
    await env.actor.ingest.remote([alert("Flaky", "hook"), alert("Refused", "hook-b"), alert("Hushed", "hook")])
    await env.rx.wait_for(3, path="/hook")
    await wait_until(lambda: len(env.rx.received("/hook-b")) >= 1)
    await asyncio.sleep(2.5)  # two more group ticks
    assert [r.status for r in env.rx.received("/hook")] == [503, 503, 200]
    assert {r.json["groupLabels"]["alertname"] for r in env.rx.received("/hook")} == {"Flaky"}
    assert (await env.actor.status.remote())["dispatcher"]["silenced"] == 1
    assert [r.status for r in env.rx.received("/hook-b")] == [400]
    assert await counters(env, "hook") == {"sent": 1, "failed": 0, "retried": 2, "skipped": 0}
    assert await counters(env, "hook-b") == {"sent": 0, "failed": 1, "retried": 0, "skipped": 0}


async def test_alertmanager_v2_and_resolution(env: Env) -> None:
    """The alertmanager receiver gets API v2 postable alerts from the forwarder, with endsAt 4 resend
    intervals ahead (not per notification); resolving an alert posts it with endsAt = its end, and
    sends a resolved notification to the webhook."""
    start = time.time()
    firing = [alert("Db", "am", startsAt=start), alert("Api", "hook", startsAt=start)]
    await env.actor.ingest.remote(firing)
    [first] = await env.rx.wait_for(1, path="/api/v2/alerts")
    await env.rx.wait_for(1, path="/hook")
    [posted] = first.json
    assert posted["labels"]["alertname"] == "Db"  # only what the tree routes to the `am` receiver
    assert parse_time(posted["endsAt"]) == pytest.approx(first.at + 4 * 60, abs=5)
    assert posted["startsAt"].endswith("Z") and "runbook" in posted["annotations"]
    end = time.time()
    await env.actor.ingest.remote([{**a, "endsAt": end} for a in firing])
    _, second = await env.rx.wait_for(2, path="/api/v2/alerts")
    _, resolved = await env.rx.wait_for(2, path="/hook")
    assert parse_time(second.json[0]["endsAt"]) == pytest.approx(end, abs=0.01)
    body = resolved.json
    assert body["status"] == "resolved" and body["alerts"][0]["status"] == "resolved"
    assert body["alerts"][0]["endsAt"] != "0001-01-01T00:00:00Z"
    assert (await counters(env, "am"))["skipped"] >= 1  # the notification itself posts nothing


async def test_restart_neither_repeats_nor_loses(env: Env) -> None:
    """After Ray restarts a killed actor, a delivered notification is not sent again and an alert
    ingested after the kill is delivered exactly once."""
    import ray

    await env.actor.ingest.remote([alert("Before", "hook")])
    await env.rx.wait_for(1, path="/hook")
    deadline = time.monotonic() + 5
    while (await counters(env, "hook")).get("sent") != 1:  # counted only after the state is saved
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    before = await env.actor.status.remote()
    ray.kill(env.actor, no_restart=False)
    # Wait for it to come back, as the supervisor's periodic status poll does: a restarted actor
    # runs nothing until a call reaches it (its __init__ schedules nothing).
    deadline = time.monotonic() + 30
    while (await env.actor.status.remote())["startedAt"] == before["startedAt"]:
        assert time.monotonic() < deadline, "the actor did not come back"
        await asyncio.sleep(0.1)
    result = await asyncio.wait_for(env.actor.ingest.remote([alert("After", "hook")]), 10)
    assert result["accepted"] == 1
    await env.rx.wait_for(2, path="/hook")
    await asyncio.sleep(2.5)  # two more group ticks: a lost log entry would resend "Before" now
    names = [r.json["groupLabels"]["alertname"] for r in env.rx.received("/hook")]
    assert sorted(names) == ["After", "Before"]
    status = await env.actor.status.remote()
    assert status["dispatcher"]["groups"] == 2  # "Before" was restored, not forgotten
