"""Bytes form of a :class:`~policies.breaker.windows.LatencySketch`, as ``MetricRollup.latency_sketch``
carries it: orjson of ``{"a": alpha, "z": zero_count, "k": [keys...], "n": [counts...]}``.

Compact enough for per-minute rollups (tens of buckets) and readable by anything with JSON.
An empty byte string is an empty sketch (rollups written without latencies).
"""

from __future__ import annotations

import orjson

from policies.breaker.latency_sketch import DEFAULT_ALPHA, LatencySketch


class SketchDecodeError(ValueError):
    """The bytes are not a sketch this codec wrote."""


def encode_sketch(sketch: LatencySketch) -> bytes:
    """The sketch's bytes (keys ascending, so equal sketches give equal bytes)."""
    keys = sorted(sketch.counts)
    return orjson.dumps({"a": sketch.alpha, "z": sketch.zero_count, "k": keys, "n": [sketch.counts[k] for k in keys]})


def encode_counts(keys: list[int], counts: list[int], *, zero_count: int = 0, alpha: float = DEFAULT_ALPHA) -> bytes:
    """The bytes of a sketch given as ascending bucket ``keys`` and their ``counts`` (no
    LatencySketch built: for writers that bucket values themselves, vectorised)."""
    return orjson.dumps({"a": alpha, "z": zero_count, "k": keys, "n": counts})


def decode_sketch(data: bytes, *, alpha: float = DEFAULT_ALPHA) -> LatencySketch:
    """The sketch in ``data``; ``b""`` gives an empty sketch of ``alpha``."""
    if not data:
        return LatencySketch(alpha=alpha)
    try:
        doc = orjson.loads(data)
        sketch = LatencySketch(alpha=float(doc["a"]))
        if doc["z"]:
            sketch.add_key(None, int(doc["z"]))
        for k, n in zip(doc["k"], doc["n"], strict=True):
            sketch.add_key(int(k), int(n))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise SketchDecodeError(f"not an encoded latency sketch: {exc}") from exc
    return sketch
