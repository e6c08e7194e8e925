"""``python -m benchmarks.memory`` — bytes per pending call and per known service, and the bound
the pending table's cap puts on a flood of unanswered calls.

Measured with tracemalloc on the observer's correlation core (``policies.correlation``) and the
per-service monitor core (``policies.monitoring``), with realistic call payloads (parsed once, as
the observer does). A ServiceMonitor is also a Ray actor process; its resident size is reported
separately when ``--actor`` is given (it needs a local Ray).
"""

from __future__ import annotations

import argparse
import gc
import tracemalloc
from typing import Any

import orjson

from benchmarks.common import print_table, write_result
from policies.circuit_breaker import load_breaker_policy
from policies.correlation import Correlator
from policies.health import load_health_policy
from policies.monitoring import MonitorCore


def _call(i: int) -> dict[str, Any]:
    return orjson.loads(orjson.dumps({
        "jsonrpc": "2.0", "id": f"3f2a9c1b-{i:08d}-4c1e-9a51-7d2e8b6f0a{i % 100:02d}", "method": "getUser",
        "params": {"userId": f"u{i}"}, "replyTo": f"session/s{i % 500}/response",
        "correlationId": f"corr-{i:012d}", "userContext": {"userId": f"u{i % 1000}", "roles": ["user"]}}))


def measured(fn: Any) -> tuple[int, Any]:
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    keep = fn()
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return after - before, keep


def pending_bytes(n: int, cap: int) -> tuple[float, int, int]:
    calls = [_call(i) for i in range(n)]  # parsed before measuring: the payload is the broker's
    c = Correlator(call_timeout_s=30, pending_cap=cap)

    def fill() -> Correlator:
        for i, doc in enumerate(calls):
            c.on_call("UserManagement", doc, doc["replyTo"], doc["correlationId"], now=float(i) * 1e-4)
        return c

    size, _ = measured(fill)
    tracked = len(c.pending)
    return size / max(tracked, 1), tracked, c.counters.pending_overflow


def service_bytes(n: int) -> float:
    breaker = load_breaker_policy().for_service("x")
    health = load_health_policy()

    def make() -> list[MonitorCore]:
        return [MonitorCore(service=f"S{i}", cluster_id="c", breaker=breaker, health=health, now=0.0)
                for i in range(n)]

    size, _ = measured(make)
    return size / n


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.memory", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--calls", type=int, default=100_000)
    p.add_argument("--services", type=int, default=200)
    a = p.parse_args(argv)
    per_call, tracked, _ = pending_bytes(a.calls, cap=a.calls)
    flood_calls = a.calls * 3
    flood_per_call, flood_tracked, overflow = pending_bytes(flood_calls, cap=a.calls)
    per_service = service_bytes(a.services)
    rows = [
        ["pending call (observer)", per_call, f"{tracked:,} pending"],
        [f"flood of {flood_calls:,} unanswered calls, cap {a.calls:,}", flood_per_call * flood_tracked,
         f"{flood_tracked:,} tracked, {overflow:,} counted as overflow"],
        ["known service (monitor core: breaker, 2-min window, health)", per_service, f"{a.services} services"],
    ]
    print_table("Memory", ["what", "bytes", "note"], rows)
    bound = per_call * a.calls
    write_result("memory", results={"bytes_per_pending_call": per_call, "bytes_per_service": per_service,
                                    "flood_total_bytes": flood_per_call * flood_tracked,
                                    "flood_overflow_counted": overflow, "cap": a.calls},
                 baseline={"bytes_at_cap": bound}, ratio=(flood_per_call * flood_tracked) / bound,
                 target="memory under a flood stays at the cap's size (ratio <= 1.05)",
                 met=flood_tracked == a.calls and overflow == flood_calls - a.calls)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
