"""What every benchmark shares: machine facts, medians, the result file and the printed table.

Result file ``var/bench/NAME.json``::

    {"benchmark", "machine", "results", "baseline", "ratio", "target", "met"}
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

__all__ = ["BENCH_DIR", "machine", "median", "quantile", "write_result"]

BENCH_DIR = Path("var/bench")


def machine() -> dict[str, Any]:
    mem_gib = None
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    mem_gib = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "memory_gib": mem_gib,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def quantile(values: Sequence[float], q: float) -> float:
    """Exact quantile of a small sample (benchmarks only; the product uses sketches)."""
    if not values:
        return float("nan")
    s = sorted(values)
    idx = min(len(s) - 1, max(0, round(q * (len(s) - 1))))
    return float(s[idx])


def write_result(
    name: str,
    *,
    results: dict[str, Any],
    baseline: dict[str, Any],
    ratio: float | None,
    target: str,
    met: bool,
) -> Path:
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    path = BENCH_DIR / f"{name}.json"
    doc = {
        "benchmark": name,
        "machine": machine(),
        "results": results,
        "baseline": baseline,
        "ratio": ratio,
        "target": target,
        "met": met,
    }
    path.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
    print(f"\nwrote {path}")
    return path
