"""sfa-ops forwarding to a real Prometheus Alertmanager (Debian's ``prometheus-alertmanager``).

The session's Alertmanager (tests/conftest.py) resolves an alert that is not re-sent within
``resolve_timeout`` = 3 s and notifies a real HTTP receiver through its webhook integration. The
AlertManager actor runs on the session's Ray with the shipped routing tree and
``--alertmanager URL`` with a 1 s resend interval (so ``endsAt`` is 4 s ahead).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from adapters.runtime.processes import ChildService
from policies.alerting.model import parse_time
from tests.support.http_receiver import HttpReceiver

pytestmark = pytest.mark.integration

RESOLVE_TIMEOUT = 3.0  # the session Alertmanager's global.resolve_timeout
RESEND = 1.0


@dataclass
class Env:
    actor: Any
    am: str
    hook: HttpReceiver
    http: aiohttp.ClientSession


@pytest.fixture
async def env(
    tmp_path: Path, broker_url: str, ray_session: None, alertmanager: ChildService,
    alertmanager_webhook: HttpReceiver,
) -> AsyncIterator[Env]:
    import ray

    from actors.alertmanager import AlertManager
    from actors.settings import OperateSettings

    settings = OperateSettings(broker_url=broker_url, cluster_id=f"fw{uuid.uuid4().hex[:8]}",
                               store_url=f"sqlite:///{tmp_path}/am.db", alertmanager_urls=(alertmanager.url,),
                               alertmanager_resend_s=RESEND)
    actor = AlertManager.options(  # type: ignore[attr-defined]
        name=settings.actor_name("alertmanager"), namespace=settings.namespace).remote(settings)
    await actor.start.remote()
    async with aiohttp.ClientSession() as http:
        yield Env(actor=actor, am=alertmanager.url, hook=alertmanager_webhook, http=http)
    try:
        await asyncio.wait_for(actor.stop.remote(), 10)
    finally:
        ray.kill(actor, no_restart=True)


def alert(name: str, tag: str, **extra: Any) -> dict[str, Any]:
    """An infrastructure error: the shipped tree's root receiver takes it in sfa-ops."""
    labels = {"alertname": name, "test": tag, "severity": "error", "component": "redis"}
    return {"labels": labels, "annotations": {"summary": f"{name} fired"}, "startsAt": time.time(), **extra}


async def am_alerts(env: Env, tag: str) -> dict[str, dict[str, Any]]:
    """Alertmanager's unresolved alerts with this test label, by alertname (GET /api/v2/alerts)."""
    async with env.http.get(f"{env.am}/api/v2/alerts", params={"filter": f'test="{tag}"'}) as res:
        assert res.status == 200, await res.text()
        return {a["labels"]["alertname"]: a for a in await res.json()}


def hooked(env: Env, tag: str) -> list[tuple[str, str, str]]:
    """(alertname, status, endsAt) of every alert in Alertmanager's webhook bodies for this test."""
    return [(a["labels"]["alertname"], a["status"], a["endsAt"])
            for body in env.hook.bodies("/am") if body["groupLabels"].get("test") == tag
            for a in body["alerts"]]


async def until(condition: Any, timeout: float, what: str) -> Any:
    """Poll an async condition until it returns something truthy; fail with ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        got = await condition()
        if got:
            return got
        assert time.monotonic() < deadline, f"not within {timeout}s: {what}"
        await asyncio.sleep(0.1)


async def test_held_alert_stays_active_past_resolve_timeout_then_resolves_with_sfa_ops(env: Env) -> None:
    """An alert sfa-ops holds stays active in Alertmanager well past resolve_timeout (a control alert
    posted once, as sfa-ops used to, is resolved by Alertmanager meanwhile), and is resolved, with
    sfa-ops' end time, when sfa-ops resolves it."""
    tag = uuid.uuid4().hex[:8]
    held = alert("HeldDown", tag)
    await env.actor.ingest.remote([held])
    first = (await until(lambda: am_alerts(env, tag), 10, "the held alert reaches Alertmanager"))["HeldDown"]
    seen_at = time.monotonic()
    # The control: posted once without endsAt, so Alertmanager resolves it after resolve_timeout.
    async with env.http.post(f"{env.am}/api/v2/alerts",
                             json=[{"labels": {"alertname": "PostedOnce", "test": tag}}]) as res:
        assert res.status == 200

    async def control_resolved_and_held_kept() -> bool:
        active = await am_alerts(env, tag)
        assert "HeldDown" in active and active["HeldDown"]["status"]["state"] == "active", active
        # Long enough for both resolve_timeout and the endsAt of any single post to have passed.
        return "PostedOnce" not in active and time.monotonic() - seen_at > RESOLVE_TIMEOUT + 4 * RESEND + 1

    await until(control_resolved_and_held_kept, 30, "the control resolves while the held alert stays")
    latest = (await am_alerts(env, tag))["HeldDown"]
    assert parse_time(latest["endsAt"]) > parse_time(first["endsAt"]) + 2 * RESEND  # re-sent meanwhile
    assert latest["startsAt"] == first["startsAt"]
    await until(lambda: asyncio.to_thread(lambda: ("PostedOnce", "resolved") in
                                          [(n, s) for n, s, _ in hooked(env, tag)]),
                10, "Alertmanager notifies the control's resolution")
    assert ("HeldDown", "resolved") not in [(n, s) for n, s, _ in hooked(env, tag)]

    ended = time.time()
    await env.actor.ingest.remote([{**held, "endsAt": ended}])
    await until(lambda: _gone(env, tag, "HeldDown"), 10, "Alertmanager resolves the alert sfa-ops resolved")

    async def resolved_notice() -> list[str]:
        return [e for n, s, e in hooked(env, tag) if (n, s) == ("HeldDown", "resolved")]

    [ends] = await until(resolved_notice, 10, "the webhook gets the resolution")
    assert abs(parse_time(ends) - ended) < 0.01  # sfa-ops' end time, not a timeout


async def _gone(env: Env, tag: str, name: str) -> bool:
    return name not in await am_alerts(env, tag)


async def test_silence_made_through_alertmanager_mutes_the_forwarded_alert(env: Env) -> None:
    """A silence created with Alertmanager's API mutes a forwarded alert at its webhook receiver,
    while an unsilenced alert of the same group is notified."""
    tag = uuid.uuid4().hex[:8]
    now = time.time()
    silence = {
        "matchers": [{"name": "alertname", "value": "Hushed", "isRegex": False, "isEqual": True},
                     {"name": "test", "value": tag, "isRegex": False, "isEqual": True}],
        "startsAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 5)),
        "endsAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now + 3600)),
        "createdBy": "sfa-ops tests", "comment": "maintenance",
    }
    async with env.http.post(f"{env.am}/api/v2/silences", json=silence) as res:
        assert res.status == 200, await res.text()
        silence_id = (await res.json())["silenceID"]
    hushed, loud = alert("Hushed", tag), alert("Loud", tag)
    await env.actor.ingest.remote([hushed, loud])

    async def both_forwarded() -> dict[str, dict[str, Any]] | None:
        active = await am_alerts(env, tag)
        return active if {"Hushed", "Loud"} <= set(active) else None

    active = await until(both_forwarded, 10, "both alerts reach Alertmanager")
    assert active["Hushed"]["status"] == {"state": "suppressed", "silencedBy": [silence_id], "inhibitedBy": []}
    assert active["Loud"]["status"]["state"] == "active"
    await until(lambda: asyncio.to_thread(lambda: ("Loud", "firing") in [(n, s) for n, s, _ in hooked(env, tag)]),
                10, "the unsilenced alert is notified")

    ended = time.time()
    await env.actor.ingest.remote([{**hushed, "endsAt": ended}, {**loud, "endsAt": ended}])
    await until(lambda: asyncio.to_thread(lambda: ("Loud", "resolved") in [(n, s) for n, s, _ in hooked(env, tag)]),
                10, "the unsilenced alert's resolution is notified")
    # From the first post to the resolution (several resends), the silenced one never reached the receiver.
    assert [n for n, _, _ in hooked(env, tag) if n == "Hushed"] == []
