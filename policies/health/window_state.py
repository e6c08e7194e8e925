"""The monitor's health window as a saved document: compact, bounded, aged on restore.

A restarted monitor must judge health from the same recent calls as before the restart, or a
degraded service whose breaker is still open (so no new calls reach the window) is announced
recovered. ``dump_window`` writes the calls of a :class:`~policies.breaker.windows.TimeWindow` still in
the window; ``restore_window`` puts them back at their own times, so that they leave the window
when they would have without the restart (a segment older than the window at ``now`` is dropped).

Bounded on both sides::

    {"v": 1, "a": alpha, "s": [[start_s, calls, slow_calls, total_duration_s,
                                [code, n, code, n, ...], shift, zero_count, offset, [n, n, ...]], ...]}

- at most :data:`MAX_SEGMENTS` segments: the window's buckets are merged into segments of
  ``ceil(buckets / (MAX_SEGMENTS - 1))`` buckets, each saved at its newest bucket's start (a call
  leaves the restored window at most one segment late: 6 s for a 2-minute window of 1-second buckets);
- at most :data:`MAX_CODES` outcome codes per segment: the rarer codes are folded into the most
  frequent dropped code of the same kind (failure or not), so failure and unanswered counts —
  what health decides on — are kept exactly;
- latency buckets as a dense run of at most :data:`MAX_KEY_SPAN` counts from ``offset``; a wider
  run is coarsened by merging neighbours (``shift`` halvings, DDSketch-style collapsing), which
  widens the restored quantiles' relative error from ``alpha`` to about ``2**shift · alpha``.

A saved document that is not one of these (hostile, corrupt, from another version) is refused
as a whole or segment by segment, and counted in :class:`WindowRestore`; it never raises.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any, Final, cast

from policies.breaker.outcomes import UNANSWERED, is_failure
from policies.breaker.windows import BucketCounts, TimeWindow

VERSION: Final[int] = 1
MAX_SEGMENTS: Final[int] = 24
MAX_CODES: Final[int] = 16
MAX_KEY_SPAN: Final[int] = 64
MAX_SHIFT: Final[int] = 16
MAX_LOG_LATENCY: Final[float] = 600.0
"""A restored latency bucket's value stays below e**600 (far beyond any duration, still a float)."""
MAX_CALLS: Final[int] = 10**12
_CODE_LIMIT: Final[int] = 2**31
_ZERO: Final[frozenset[None]] = frozenset({None})


@dataclass(slots=True)
class WindowRestore:
    """What a restore did: segments put back, dropped because they aged out, refused as invalid."""

    restored: int = 0
    expired: int = 0
    refused: int = 0
    reasons: list[str] = field(default_factory=list)

    def refuse(self, why: str, n: int = 1) -> None:
        self.refused += n
        if len(self.reasons) < 8:
            self.reasons.append(why)


SegmentCache = dict[tuple[tuple[float, int], ...], list[Any]]
"""Encoded segments by their buckets' (start, calls): a bucket only grows, so equal keys mean an
unchanged segment, and a dump re-encodes only the segments that got calls since the last one."""


def dump_window(window: TimeWindow, now: float, cache: SegmentCache | None = None) -> dict[str, Any]:
    """The calls still in ``window`` at ``now``, as a bounded JSON-able document. ``cache`` (kept by
    the caller between dumps of the same window) is updated to hold this dump's segments only."""
    # Segments are aligned on multiples of their width, so the window's two ends may each cut one:
    # with MAX_SEGMENTS - 1 widths over the window there are never more than MAX_SEGMENTS.
    per = max(1, math.ceil(math.ceil(window.length_s / window.granularity_s) / (MAX_SEGMENTS - 1)))
    width = per * window.granularity_s
    merged: dict[int, list[BucketCounts]] = {}
    for b in window.buckets(now):
        merged.setdefault(int(b.start_s // width), []).append(b)
    old = cache.copy() if cache is not None else {}
    if cache is not None:
        cache.clear()
    segments = []
    for _, parts in sorted(merged.items()):
        key = tuple((b.start_s, b.calls) for b in parts)
        seg = old.get(key) or _segment(parts)
        if cache is not None:
            cache[key] = seg
        segments.append(seg)
    alpha = window.sketch.alpha if window.sketch is not None else None
    return {"v": VERSION, "a": alpha, "s": segments}


def _segment(parts: list[BucketCounts]) -> list[Any]:
    calls = sum(b.calls for b in parts)
    slow = sum(b.slow_calls for b in parts)
    duration = sum(b.total_duration_s for b in parts)
    outcomes: dict[int, int] = {}
    for b in parts:
        for code, c in b.outcomes.items():
            outcomes[code] = outcomes.get(code, 0) + c
    shift, offset, counts = _dense(parts)
    flat = [x for code, c in _fold_codes(outcomes) for x in (code, c)]
    zero = sum(b.keys.get(None, 0) for b in parts)
    return [parts[-1].start_s, calls, slow, round(duration, 6), flat, shift, zero, offset, counts]


def _fold_codes(outcomes: dict[int, int]) -> list[tuple[int, int]]:
    """At most MAX_CODES codes; the rarest folded into a dropped code of the same kind."""
    ranked = sorted(outcomes.items(), key=lambda kv: (kv[0] != UNANSWERED, -kv[1], kv[0]))
    if len(ranked) <= MAX_CODES:
        return ranked
    kept = dict(ranked[: MAX_CODES - 2])
    for failing in (True, False):
        rest = [(code, c) for code, c in ranked[MAX_CODES - 2:] if is_failure(code) is failing]
        if rest:
            kept[rest[0][0]] = sum(c for _, c in rest)
    return list(kept.items())


def _dense(parts: list[BucketCounts]) -> tuple[int, int, list[int]]:
    """(shift, offset, counts): the buckets' latency keys as one dense run of at most MAX_KEY_SPAN
    counts, neighbours merged ``shift`` times (one pass over the keys: this runs in the tick)."""
    ranges = [(min(ks), max(ks)) for ks in (cast("AbstractSet[int]", b.keys.keys() - _ZERO) for b in parts) if ks]
    if not ranges:
        return 0, 0, []
    lo, hi = min(r[0] for r in ranges), max(r[1] for r in ranges)
    shift = 0
    while -(-hi // (1 << shift)) - -(-lo // (1 << shift)) >= MAX_KEY_SPAN:
        shift += 1
    m = 1 << shift
    offset = -(-lo // m)  # ceil(k / m): the coarse bucket holding fine key k
    counts = [0] * (-(-hi // m) - offset + 1)
    for b in parts:
        for k, c in b.keys.items():
            if k is not None:
                counts[-(-k // m) - offset] += c
    return shift, offset, counts


def restore_window(window: TimeWindow, data: object, now: float) -> WindowRestore:
    """Put the saved calls back into an empty ``window`` at their own times; never raises."""
    report = WindowRestore()
    if not isinstance(data, Mapping) or data.get("v") != VERSION or not isinstance(data.get("s"), list):
        report.refuse("not a saved window")
        return report
    alpha = data.get("a")
    sketch = window.sketch
    max_key = int(MAX_LOG_LATENCY / math.log(sketch.gamma)) if sketch is not None and alpha == sketch.alpha else 0
    saved: list[Any] = data["s"]
    if len(saved) > MAX_SEGMENTS:
        report.refuse("too many segments", len(saved) - MAX_SEGMENTS)
    parsed: list[BucketCounts] = []
    for raw in saved[:MAX_SEGMENTS]:
        seg = _parse(raw, now + window.length_s, max_key, report)
        if seg is not None:
            parsed.append(seg)
    parsed.sort(key=lambda b: b.start_s)
    for seg in parsed:
        if window.add_counts(now, seg):
            report.restored += 1
        else:
            report.expired += 1
    return report


def _int(x: object, lo: int, hi: int) -> int | None:
    return x if type(x) is int and lo <= x <= hi else None


def _parse(raw: object, latest: float, max_key: int, report: WindowRestore) -> BucketCounts | None:
    """One saved segment, or None (refused and counted). ``max_key`` 0: latencies not restored."""
    if not isinstance(raw, list) or len(raw) != 9:
        report.refuse("segment is not a list of 9")
        return None
    start, calls, slow, duration, flat, shift, zero, offset, counts = raw
    if type(start) not in (int, float) or not math.isfinite(start) or start > latest:
        report.refuse("segment time not finite or too far ahead")
        return None
    n_calls = _int(calls, 1, MAX_CALLS)
    n_slow = None if n_calls is None else _int(slow, 0, n_calls)
    if n_calls is None or n_slow is None:
        report.refuse("segment counts out of range")
        return None
    if type(duration) not in (int, float) or not 0.0 <= duration < math.inf:
        report.refuse("segment duration not a finite non-negative number")
        return None
    if not isinstance(flat, list) or len(flat) % 2 or len(flat) > 2 * MAX_CODES:
        report.refuse("segment outcomes malformed")
        return None
    outcomes: dict[int, int] = {}
    for i in range(0, len(flat), 2):
        code, c = _int(flat[i], -_CODE_LIMIT, _CODE_LIMIT), _int(flat[i + 1], 1, n_calls)
        if code is None or c is None or code in outcomes:
            report.refuse("segment outcome malformed")
            return None
        outcomes[code] = c
    if sum(outcomes.values()) > n_calls:
        report.refuse("more outcomes than calls")
        return None
    keys = _keys(shift, zero, offset, counts, n_calls, max_key) if max_key else {}
    if keys is None:
        report.refuse("segment latencies malformed")
        return None
    return BucketCounts(float(start), n_calls, n_slow, float(duration), outcomes, keys)


def _keys(shift: object, zero: object, offset: object, counts: object, calls: int,
          max_key: int) -> dict[int | None, int] | None:
    """The fine sketch keys of a dense run (each coarse bucket at its middle fine key), or None."""
    s, z, off = _int(shift, 0, MAX_SHIFT), _int(zero, 0, calls), _int(offset, -max_key, max_key)
    if s is None or z is None or off is None or not isinstance(counts, list) or len(counts) > MAX_KEY_SPAN:
        return None
    m = 1 << s
    keys: dict[int | None, int] = {None: z} if z else {}
    total = z
    for i, c in enumerate(counts):
        n = _int(c, 0, calls)
        key = (off + i) * m - m // 2
        if n is None or abs(key) > max_key:
            return None
        if n:
            keys[key] = n
            total += n
    return keys if total <= calls else None


__all__ = ["MAX_CODES", "MAX_KEY_SPAN", "MAX_SEGMENTS", "WindowRestore", "dump_window", "restore_window"]
