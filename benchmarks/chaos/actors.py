"""``benchmarks.chaos.actors`` — kill -9 of each kind of sfa-ops actor's own process under traffic,
at a random (seeded) moment, then a scripted service crash; per kind: findings lost, state
restored, duplicates published, time to recover.

All trials run in one operations job (real mosquitto, local Ray, SQLite, a local webhook as the
alert receiver), each ``tests.support.actor_chaos.kill_trial`` with its own services: steady traffic on one service, a
second service's breaker opened and its alert notified, then SIGKILL of the actor's worker process
(never ``ray.kill``) after a random 0-3 s, then the first service's only instance crashed with
calls pending on it. Lost: the crash's ``service_unavailable`` never published, or a pending call
never answered -32503 (or, for the analyst and responder, failed logins after the restart never
becoming a ``block_ip``). Restored: the kind's state from before the kill is back (open breaker,
health, bans, audit trail, checks). Duplicates: the finding, the breaker alert's notification or
the earlier ban published more than once. Targets: 0 lost, 100 % restored, recovery within the
call timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from adapters.mqtt.bus import MqttBus, MqttConfig
from adapters.runtime.processes import start_mosquitto
from benchmarks.common import median, write_result
from drivers.tables import print_table
from sdk import ServiceClient
from tests.support.actor_chaos import CALL_TIMEOUT_S, KINDS, MAX_ROUNDS, kill_trial, policies
from tests.support.http_receiver import HttpReceiver, http_receiver
from tests.support.operations import Operations, ServiceProcess, operations


@contextlib.asynccontextmanager
async def chaos_job(broker: str) -> AsyncIterator[tuple[Operations, ServiceClient, HttpReceiver]]:
    """One operations job on ``broker`` with the chaos policies (alerts to a local webhook), a
    client of its own, and that webhook; shared by every chaos part that runs trials in one job."""
    bus = MqttBus(config=MqttConfig.from_url(broker))
    await bus.start()
    await bus.wait_connected(10)
    client = ServiceClient(bus)
    await client.start()
    try:
        with tempfile.TemporaryDirectory(prefix="sfa-chaos-") as tmp, http_receiver() as hook:
            async with operations(broker, Path(tmp), policies=policies(hook.url)) as ops:
                yield ops, client, hook
    finally:
        await client.close()
        await bus.stop()


def failed_trial(kind: str, exc: Exception) -> dict[str, Any]:
    """A trial that could not even be set up: it counts as lost."""
    return {"kind": kind, "lost": 1, "restored": {"trial": False}, "duplicates": 0, "recover_s": float("nan"),
            "detail": {"error": f"{type(exc).__name__}: {exc}"}}


def print_trial(label: str, r: dict[str, Any]) -> None:
    print(f"  {label}: lost {r['lost']}, restored {r['restored']}, duplicates {r['duplicates']}, "
          f"recovered in {r['recover_s']:.2f} s", flush=True)


async def _trials(broker: str, kinds: tuple[str, ...], trials: int, seed: int) -> list[dict[str, Any]]:
    """Every trial in one operations job (each with its own services): every kill after the first
    also shows the job survived the ones before it."""
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    async with chaos_job(broker) as (ops, client, hook):
        for n in range(trials):
            for kind in kinds:
                delay = rng.uniform(0.0, 3.0)
                procs: list[ServiceProcess] = []
                try:
                    r = (await kill_trial(ops, client, procs, hook, kind, n=n, kill_after_s=delay)).as_dict()
                except Exception as exc:
                    r = failed_trial(kind, exc)
                finally:
                    for p in procs:
                        p.stop()
                r["kill_after_s"] = delay
                print_trial(f"{kind} #{n + 1}", r)
                out.append(r)
    return out


def run(trials: int, seed: int, kinds: tuple[str, ...] = KINDS) -> list[dict[str, Any]]:
    """``trials`` kills per actor kind (in the current Ray, or a local one started here); one dict
    per trial (``kind``, ``lost``, ``restored``, ``duplicates``, ``recover_s``, ``detail``)."""
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(address="local", include_dashboard=False, log_to_driver=False, configure_logging=False)
    broker = start_mosquitto()
    try:
        return asyncio.run(_trials(broker.url, kinds, trials, seed))
    finally:
        broker.stop()
        if started:
            ray.shutdown()


def summarize(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for kind in dict.fromkeys(r["kind"] for r in results):
        rs = [r for r in results if r["kind"] == kind]
        checks = [ok for r in rs for ok in r["restored"].values()]
        rec = [r["recover_s"] for r in rs if r["recover_s"] == r["recover_s"]]
        rows.append({"kind": kind, "trials": len(rs), "lost": sum(r["lost"] for r in rs),
                     "restored_pct": 100.0 * sum(checks) / len(checks) if checks else 0.0,
                     "duplicates": sum(r["duplicates"] for r in rs),
                     "recover_median_s": median(rec), "recover_max_s": max(rec) if rec else float("nan"),
                     "unrecovered": len(rs) - len(rec)})
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.chaos.actors", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=3, help=f"kills per actor kind (default 3, at most {MAX_ROUNDS})")
    p.add_argument("--seed", type=int, default=1, help="seed of the kill moments (default 1)")
    p.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS), help="actor kinds (default all)")
    p.add_argument("--json", metavar="PATH", help="also write every trial as JSON here")
    a = p.parse_args(argv)
    if not 1 <= a.trials <= MAX_ROUNDS:
        p.error(f"--trials must be 1..{MAX_ROUNDS}")
    results = run(a.trials, a.seed, tuple(a.kinds))
    report(results, name="chaos_actors", first="actor", json_path=a.json,
           title=f"kill -9 of one sfa-ops actor process under traffic (seed {a.seed}; recovery bound "
                 f"{CALL_TIMEOUT_S:g} s = the call timeout)")
    return 0


def report(results: list[dict[str, Any]], *, name: str, first: str, title: str, json_path: str | None) -> None:
    """The table (one row per ``kind``), every trial as JSON at ``json_path`` if given, and
    ``var/bench/NAME.json`` with whether the targets were met."""
    rows = summarize(results)
    print_table(title, [first, "trials", "findings lost", "state restored %", "duplicates", "recover median s",
                        "recover max s", "unrecovered"],
                [[r["kind"], r["trials"], r["lost"], r["restored_pct"], r["duplicates"], r["recover_median_s"],
                  r["recover_max_s"], r["unrecovered"]] for r in rows])
    met = all(r["lost"] == 0 and r["restored_pct"] == 100.0 and r["duplicates"] == 0 and r["unrecovered"] == 0
              and r["recover_max_s"] <= CALL_TIMEOUT_S for r in rows)
    if json_path:
        import orjson

        Path(json_path).write_bytes(orjson.dumps({"summary": rows, "trials": results}, option=orjson.OPT_INDENT_2))
    write_result(name, results={"summary": rows}, baseline={"recovery_bound_s": CALL_TIMEOUT_S},
                 ratio=None, target="0 findings lost, 100 % state restored, 0 duplicates, recovery <= call timeout",
                 met=met)


if __name__ == "__main__":
    raise SystemExit(main())
