"""Cost of one record-and-decide on our circuit breaker beside pybreaker's ``call`` overhead.

Ours: ``try_acquire(now)`` then ``on_result(now, duration, code)`` on a breaker with the default
300 s time window, the clock moving 5 ms per call (so the window fills and evicts buckets during
the run), durations spread over 5-250 ms, 5 % caller errors and 2 % internal errors (below the
threshold: the breaker stays closed, the common case). Baseline: ``pybreaker.CircuitBreaker.call``
on a no-op function. Both run in the same process, alternating, ``--repeats`` times; medians are
reported.

    python -m benchmarks.breaker [--calls 200000] [--repeats 7]
"""

from __future__ import annotations

import argparse
import time
from importlib.metadata import version
from typing import Any

import pybreaker

from benchmarks.alert_routing import routing_throughput
from benchmarks.common import median, write_result
from drivers.tables import print_table
from policies.breaker.circuit import CircuitBreaker
from policies.breaker.settings import BreakerSettings
from policies.breaker.transitions import BreakerState
from policies.breaker.windows import TimeWindow

TARGET_RATIO = 0.8
TARGET = f"<= {TARGET_RATIO}x pybreaker's cost per call"


def _workload(calls: int) -> tuple[list[float], list[float], list[int | None]]:
    nows = [1_700_000_000.0 + i * 0.005 for i in range(calls)]
    durations = [0.005 * (1 + (i * 7919) % 50) for i in range(calls)]
    codes: list[int | None] = [
        -32001 if i % 20 == 0 else -32603 if i % 50 == 1 else None for i in range(calls)
    ]
    return nows, durations, codes


def _time_ours(nows: list[float], durations: list[float], codes: list[int | None]) -> float:
    breaker = CircuitBreaker(service="Bench", config=BreakerSettings(), now=nows[0])
    acquire, record = breaker.try_acquire, breaker.on_result
    start = time.perf_counter_ns()
    for now, duration, code in zip(nows, durations, codes, strict=True):
        if acquire(now).allowed:
            record(now, duration, code)
    elapsed = time.perf_counter_ns() - start
    if breaker.state is not BreakerState.CLOSED:
        raise RuntimeError("benchmark workload tripped the breaker; the measurement would be wrong")
    return elapsed / len(nows)


def _time_latency_window(nows: list[float], durations: list[float], codes: list[int | None]) -> float:
    """For reference: a record into the health window, which also keeps the latency sketch."""
    window = TimeWindow(length_s=300.0, slow_call_s=5.0)
    add = window.add
    start = time.perf_counter_ns()
    for now, duration, code in zip(nows, durations, codes, strict=True):
        add(now, duration, code)
    return (time.perf_counter_ns() - start) / len(nows)


def _noop() -> None:
    return None


def _time_pybreaker(calls: int) -> float:
    breaker = pybreaker.CircuitBreaker(fail_max=5, reset_timeout=60)
    call = breaker.call
    start = time.perf_counter_ns()
    for _ in range(calls):
        call(_noop)
    return (time.perf_counter_ns() - start) / calls


def run(*, calls: int = 200_000, repeats: int = 7) -> dict[str, Any]:
    """Measure both sides alternating; returns ``results``/``baseline``/``ratio``/``target``/``met``
    plus ``rows`` for the table (callers may add sections before writing)."""
    nows, durations, codes = _workload(calls)
    ours: list[float] = []
    theirs: list[float] = []
    sketched: list[float] = []
    for rep in range(repeats):
        # Alternate which side goes first so warm-up and frequency drift hit both equally.
        if rep % 2 == 0:
            ours.append(_time_ours(nows, durations, codes))
            theirs.append(_time_pybreaker(calls))
        else:
            theirs.append(_time_pybreaker(calls))
            ours.append(_time_ours(nows, durations, codes))
        sketched.append(_time_latency_window(nows, durations, codes))
    ours_ns, theirs_ns, sketched_ns = median(ours), median(theirs), median(sketched)
    ratio = ours_ns / theirs_ns
    return {
        "results": {
            "breaker_ns_per_call": round(ours_ns, 1),
            "breaker_calls_per_s": round(1e9 / ours_ns),
            "breaker_runs_ns": [round(x, 1) for x in ours],
            "latency_window_ns_per_record": round(sketched_ns, 1),
            "workload": {
                "calls": calls,
                "repeats": repeats,
                "window": "300s time window, 1s buckets",
                "clock_step_ms": 5,
                "caller_error_share": 0.05,
                "internal_error_share": 0.02,
            },
        },
        "baseline": {
            "pybreaker_version": version("pybreaker"),
            "pybreaker_ns_per_call": round(theirs_ns, 1),
            "pybreaker_calls_per_s": round(1e9 / theirs_ns),
            "pybreaker_runs_ns": [round(x, 1) for x in theirs],
        },
        "ratio": round(ratio, 3),
        "target": TARGET,
        "met": ratio <= TARGET_RATIO,
        "rows": [
            ["sfa-ops breaker (try_acquire + on_result)", ours_ns, 1e9 / ours_ns, ratio],
            ["pybreaker.call(no-op)", theirs_ns, 1e9 / theirs_ns, 1.0],
            ["(reference) health window record with p50/p95/p99 sketch", sketched_ns, 1e9 / sketched_ns, "-"],
        ],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=200_000, help="calls per repetition (default 200000)")
    parser.add_argument("--repeats", type=int, default=7, help="repetitions of each side (default 7)")
    parser.add_argument("--alerts", type=int, default=20_000, help="alerts per routing run (default 20000)")
    args = parser.parse_args(argv)
    out = run(calls=args.calls, repeats=args.repeats)
    # Report only (no target): alerts/s through fingerprinting, routing and grouping of the
    # seed's tree (policies/alerting.yaml), median of the repetitions.
    rates = [routing_throughput(args.alerts) for _ in range(args.repeats)]
    out["results"]["alert_routing_per_s"] = round(median(rates))
    out["results"]["alert_routing_runs"] = [round(r) for r in rates]
    out["rows"].append([f"(report) alert routing + grouping, seed tree, {args.alerts:,} alerts",
                        1e9 / median(rates), median(rates), "-"])
    print_table(
        f"circuit breaker record-and-decide, median of {args.repeats} x {args.calls:,} calls",
        ["side", "ns/call", "calls/s", "ratio"],
        out["rows"],
    )
    print(f"\nratio {out['ratio']} (target {out['target']}): {'met' if out['met'] else 'NOT met'}")
    write_result(
        "breaker",
        results=out["results"],
        baseline=out["baseline"],
        ratio=out["ratio"],
        target=out["target"],
        met=out["met"],
    )


if __name__ == "__main__":
    main()
