"""``python -m drivers.status --broker URL --cluster-id C [--watch] [--json] [--trust KEY.pub]`` —
the state of every service and infrastructure component, read from the retained
``system/{cluster}/health`` message on the broker (operate need not be reachable any other way),
and the enforcement actions in force (block_ip …), read from the retained
``system/{cluster}/security/actions/active`` set when operate runs its security actors.

Only what the broker retains is shown: open incidents and recent alerts are not retained (they are
events on ``system/{cluster}/incidents`` and ``…/alerts``), so this command says "not retained"
for them; the status page (operate ``--http``) and ``python -m drivers.incidents`` show them.

With ``--trust`` (the public key beside operate's ``--signing-key``), a message that is unsigned or
badly signed is refused; a stale one is shown with its age. ``--watch`` redraws on every new summary
until interrupted.

Exit status: 0 shown, 1 no health message within ``--timeout`` (is operate running for this
cluster id?), 2 bad arguments or broker unreachable.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Sequence
from typing import Any

import orjson

from drivers.options import LOG_OPTIONS, Option, OptionError, configure_logs, fail, resolve, seconds

PROG = "python -m drivers.status"

OPTIONS = [
    Option("broker", "MQTT broker URL (mqtt://[user@]host:port, mqtts:// for TLS)", default="mqtt://127.0.0.1:1883",
           metavar="URL"),
    Option("broker-password-file", "file holding the broker password", metavar="FILE"),
    Option("cluster-id", "cluster id of the system/{cluster}/... topics", default="local"),
    Option("trust", "operate's public key (PEM, the .pub beside --signing-key): refuse unsigned or badly "
           "signed summaries", metavar="FILE"),
    Option("timeout", "how long to wait for the retained summary", default=5.0, convert=seconds),
    Option("watch", "keep redrawing on every new summary until interrupted", flag=True),
    Option("json", "print the summary as JSON (the /status.json document) instead of a table", flag=True),
    *LOG_OPTIONS,
]


def render(view: dict[str, Any], *, age_s: float | None, actions_at: str | None = None) -> str:
    """The status as a terminal table."""
    age = "" if age_s is None else f" ({age_s:.0f} s ago)"
    lines = [f"cluster {view['cluster']}: {view['status']} at {view.get('timestamp')}{age}", "",
             f"{'service':<28} {'status':<9} {'breaker':<12} {'errors':>7} {'p95':>10} {'calls/s':>8}"]
    for s in view["services"]:
        p95 = "-" if s["p95Ms"] is None else f"{s['p95Ms']:.1f} ms"
        lines.append(f"{s['service'][:28]:<28} {s['status']:<9} {s['breaker']:<12} "
                     f"{100 * (s['errorRate'] or 0):>6.1f}% {p95:>10} {s['callsPerSecond'] or 0:>8.1f}")
    if not view["services"]:
        lines.append("(no services yet)")
    if view["infrastructure"]:
        lines += ["", f"{'component':<28} status"]
        lines += [f"{c['component'][:28]:<28} {c['status']}" for c in view["infrastructure"]]
    if view.get("actions") is None:
        lines += ["", "active actions: none retained (security actors off, or no set published yet)"]
    else:
        lines += ["", f"active actions ({view['actionsTotal']}, set of {actions_at}):" if view["actions"]
                  else f"active actions: none (set of {actions_at})"]
        lines += [f"  {a['action'][:20]:<20} {a['target'][:40]:<40} until {a['until'] or 'no expiry'}"
                  for a in view["actions"]]
        if view["actionsTotal"] > len(view["actions"]):
            lines.append(f"  … {view['actionsTotal'] - len(view['actions'])} more")
    lines.append("open incidents, recent alerts: not retained on the broker (see the status page)")
    observed = ", ".join(f"{k} {v}" for k, v in view["observed"].items() if v)
    lines += ["", f"observed: {observed or 'nothing yet'}"]
    return "\n".join(lines)


async def run(opts: dict[str, Any]) -> int:
    from actors.security_common import active_actions_topic
    from adapters.mqtt.bus import Message, MqttBus, MqttConfig, MqttConfigError
    from drivers.operate import broker_url
    from policies.supervision.ops_board import active_actions_view
    from policies.supervision.status_view import status_view
    from protocol import ProtocolError, parse_model, topics
    from protocol.base import epoch_from_rfc3339
    from protocol.security import ActiveActions
    from protocol.system import SystemHealth
    from sdk.trust import SystemTrust

    try:
        config = MqttConfig.from_url(broker_url(opts))
        trust = SystemTrust.from_files(opts["trust"], max_age_s=float("inf")) if opts["trust"] else None
    except (MqttConfigError, OSError, ValueError) as exc:
        fail(PROG, str(exc))
    got: asyncio.Queue[SystemHealth] = asyncio.Queue(maxsize=16)
    refused: dict[str, int] = {}
    active: list[ActiveActions] = []  # the latest retained set, once one arrived
    active_seen = asyncio.Event()

    def trusted(msg: Message) -> bool:
        verdict = trust.check(msg) if trust is not None else "trusted"
        if verdict != "trusted":
            refused[verdict] = refused.get(verdict, 0) + 1
        return verdict == "trusted"

    def on_health(msg: Message) -> None:
        if not trusted(msg):
            return
        try:
            health = parse_model(SystemHealth, orjson.loads(msg.payload))
        except (orjson.JSONDecodeError, ProtocolError):
            refused["malformed"] = refused.get("malformed", 0) + 1
            return
        with contextlib.suppress(asyncio.QueueFull):
            got.put_nowait(health)

    def on_active(msg: Message) -> None:
        if not msg.payload or not trusted(msg):  # empty: the retained set was cleared
            return
        try:
            active[:] = [parse_model(ActiveActions, orjson.loads(msg.payload))]
        except (orjson.JSONDecodeError, ProtocolError):
            refused["malformed"] = refused.get("malformed", 0) + 1
            return
        active_seen.set()

    bus = MqttBus(config=config, client_id=f"sfa-ops-status-{time.time_ns() % 10**9}")
    await bus.start()
    try:
        try:
            await bus.wait_connected(opts["timeout"])
        except TimeoutError:
            print(f"{PROG}: error: broker not reachable within {opts['timeout']:g} s", file=sys.stderr)
            return 2
        # The active set first: the broker sends its retained copy before the health summary's.
        await bus.subscribe(active_actions_topic(opts["cluster_id"]), on_active, qos=1)
        await bus.subscribe(topics.system_health(opts["cluster_id"]), on_health, qos=1)
        while True:
            try:
                health = await asyncio.wait_for(got.get(), None if opts["watch"] else opts["timeout"])
            except TimeoutError:
                why = f" (refused: {refused})" if refused else ""
                print(f"{PROG}: no health summary for cluster {opts['cluster_id']!r} within "
                      f"{opts['timeout']:g} s{why}: is operate running with this --cluster-id?", file=sys.stderr)
                return 1
            wire = health.to_wire()
            age = max(0.0, time.time() - epoch_from_rfc3339(str(wire["timestamp"])))
            if not active_seen.is_set():  # no security actors: no set is retained; wait briefly
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(active_seen.wait(), min(1.0, opts["timeout"]))
            doc = active[0].to_wire() if active else None
            ops = {"actions": active_actions_view(doc["actions"], time.time())} if doc else None
            view = status_view({"health": wire, **({"ops": ops} if ops else {})}, age_s=age)
            if opts["json"]:
                print(orjson.dumps(view).decode(), flush=True)
            else:
                if opts["watch"] and sys.stdout.isatty():
                    print("\033[2J\033[H", end="")
                print(render(view, age_s=age, actions_at=doc["timestamp"] if doc else None), flush=True)
            if not opts["watch"]:
                return 0
    finally:
        await bus.stop()


def main(argv: Sequence[str] | None = None) -> int:
    try:
        opts = resolve(OPTIONS, argv, prog=PROG, description=__doc__ or "")
        configure_logs(opts)
    except OptionError as exc:
        fail(PROG, str(exc))
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(run(opts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
