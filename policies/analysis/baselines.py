"""Behaviour baselines from history: partial aggregates per partition, their combination, and the
baselines they finalise into. Pure: frames in, frames or dicts out; no I/O, no clock.

The ``baselines`` driver reads the audit log in time partitions (Ray tasks), turns each partition
into a :class:`Partials` with :func:`partials`, folds them with :func:`combine`, and calls
:func:`finalize` once. Every partial column is *additive* (counts, sums, sketch bucket counts), so
``combine`` is a group-by sum and any split of the history gives the same result — no average of
averages anywhere: means are ``sum / hours``, standard deviations come from sums of squares,
percentiles of hourly counts from exact count histograms, latency quantiles from merged
:class:`~policies.breaker.windows.LatencySketch` buckets.

Partial tables (``key columns -> additive columns``)::

    user_hours     user, hour            -> requests        (hour = floor(ts / 3600))
    user_services  user, service, day    -> requests        (day  = floor(ts / 86400))
    user_records   user, day             -> records
    svc_slots      service, slot         -> calls, failures (slot = hour of week, Monday 00 UTC = 0)
    svc_latency    service, slot, key    -> n               (LatencySketch bucket; ZERO_KEY = zero)

Stored shapes (``baseline_put`` kinds; see docs/analysis.md):

- ``user_activity``: ``{"schema": 1, "window": {...}, "users": {userId: {"requestsPerHour": mean,
  "requestsPerHourStd", "requestsPerHourPercentiles": {"p50","p95","p99"}, "hourOfWeek": {"mean":
  [168], "std": [168], "p95": [168]}, "typicalServices": [...], "services": {svc: requests},
  "recordsPerDay": mean, "recordsPerDayP95", "activeHours": [0..23], "requests", "records"}}}`` —
  :func:`user_baselines` turns it into ``policies.security.events.UserBaseline`` values.
- ``service_performance``: ``{"schema": 1, "window": {...}, "services": {name: {"calls",
  "failures", "errorRate", "requestsPerHour", "latencyMs": {"p50","p95","p99"}, "hourOfWeek":
  {"requestsPerHour": [168], "errorRate": [168], "p95Ms": [168]}}}}``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from policies.breaker.latency_sketch import DEFAULT_ALPHA, MIN_LATENCY_S, LatencySketch
from policies.security.events import UserBaseline

SCHEMA = 1
USER_KIND = "user_activity"
SERVICE_KIND = "service_performance"
HOUR = 3600.0
DAY = 86400.0
SLOTS = 168
ZERO_KEY = -(2**31)  # LatencySketch's zero bucket (``key() is None``) as an integer column
# 1970-01-01 was a Thursday: epoch hour 0 is hour 72 of a Monday-based week.
_EPOCH_SLOT = 72
# Typical services: called on at least this many distinct days of the window.
TYPICAL_MIN_DAYS = 2
# Active hours: hours of day with at least this share of the user's requests (half of uniform).
ACTIVE_HOUR_SHARE = 1 / 48

_KEYS: dict[str, list[str]] = {
    "user_hours": ["user", "hour"],
    "user_services": ["user", "service", "day"],
    "user_records": ["user", "day"],
    "svc_slots": ["service", "slot"],
    "svc_latency": ["service", "slot", "key"],
}


def slot_of_hour(hour: np.ndarray | int) -> Any:
    """Hour of week (0 = Monday 00:00-01:00 UTC) of an epoch hour index."""
    return (hour + _EPOCH_SLOT) % SLOTS


def sketch_keys(duration_ms: np.ndarray, alpha: float = DEFAULT_ALPHA) -> np.ndarray:
    """LatencySketch bucket keys of durations in milliseconds, vectorised (ZERO_KEY for ~0)."""
    gamma = (1 + alpha) / (1 - alpha)
    seconds = np.asarray(duration_ms, dtype="float64") / 1000.0
    out = np.full(seconds.shape, ZERO_KEY, dtype="int64")
    big = seconds > MIN_LATENCY_S
    out[big] = np.ceil(np.log(seconds[big]) / math.log(gamma)).astype("int64")
    return out


def sketch_from_counts(keys: np.ndarray, counts: np.ndarray, alpha: float = DEFAULT_ALPHA) -> LatencySketch:
    """A LatencySketch holding ``counts[i]`` values in bucket ``keys[i]``."""
    sketch = LatencySketch(alpha=alpha)
    for k, n in zip(keys.tolist(), counts.tolist(), strict=True):
        sketch.add_key(None if k == ZERO_KEY else int(k), int(n))
    return sketch


@dataclass(frozen=True, kw_only=True)
class Partials:
    """Additive partial aggregates of one partition (or of several, combined)."""

    user_hours: pd.DataFrame
    user_services: pd.DataFrame
    user_records: pd.DataFrame
    svc_slots: pd.DataFrame
    svc_latency: pd.DataFrame
    rows: int = 0

    def tables(self) -> dict[str, pd.DataFrame]:
        return {name: getattr(self, name) for name in _KEYS}

    @property
    def nbytes(self) -> int:
        return int(sum(t.memory_usage(deep=True).sum() for t in self.tables().values()))


def _sum(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    return df.groupby(keys, sort=False, observed=True).sum().reset_index()


def partials(calls: pd.DataFrame, access: pd.DataFrame, *, alpha: float = DEFAULT_ALPHA) -> Partials:
    """Partial aggregates of one partition.

    ``calls``: columns ts, user, service, duration_ms, failure (bool: counts against the service).
    ``access``: columns ts, user, records.
    """
    hour = np.floor(calls["ts"].to_numpy(dtype="float64") / HOUR).astype("int64")
    c = pd.DataFrame({
        "user": calls["user"].to_numpy(), "service": calls["service"].to_numpy(), "hour": hour,
        "day": hour // 24, "slot": slot_of_hour(hour),
        "failures": calls["failure"].to_numpy(dtype="int64"),
        "key": sketch_keys(calls["duration_ms"].to_numpy(), alpha),
    })
    user_hours = c.groupby(["user", "hour"], sort=False).size().rename("requests").reset_index()
    user_services = c.groupby(["user", "service", "day"], sort=False).size().rename("requests").reset_index()
    svc = c.groupby(["service", "slot"], sort=False)
    svc_slots = pd.DataFrame({"calls": svc.size(), "failures": svc["failures"].sum()}).reset_index()
    svc_latency = c.groupby(["service", "slot", "key"], sort=False).size().rename("n").reset_index()
    a = pd.DataFrame({
        "user": access["user"].to_numpy(),
        "day": np.floor(access["ts"].to_numpy(dtype="float64") / DAY).astype("int64"),
        "records": access["records"].to_numpy(dtype="int64"),
    })
    user_records = _sum(a, ["user", "day"])
    return Partials(user_hours=user_hours, user_services=user_services, user_records=user_records,
                    svc_slots=svc_slots, svc_latency=svc_latency, rows=len(calls) + len(access))


def empty_partials() -> Partials:
    """The identity of :func:`combine`."""
    return partials(
        pd.DataFrame({"ts": [], "user": [], "service": [], "duration_ms": [], "failure": []}),
        pd.DataFrame({"ts": [], "user": [], "records": []}),
    )


def combine(*parts: Partials) -> Partials:
    """Merge partial aggregates: a group-by sum of every table (associative and commutative)."""
    merged = {
        name: _sum(pd.concat([p.tables()[name] for p in parts], ignore_index=True), keys)
        for name, keys in _KEYS.items()
    }
    return Partials(**merged, rows=sum(p.rows for p in parts))


# ------------------------------------------------------------------ finalisation


@dataclass(frozen=True, kw_only=True)
class Window:
    """The whole hours a baseline covers: ``[start, end)``, both multiples of an hour."""

    start: float
    end: float

    @classmethod
    def aligned(cls, since: float, until: float) -> Window:
        """Whole hours inside ``[since, until)`` (a partial first or last hour is left out)."""
        start = math.ceil(since / HOUR) * HOUR
        end = math.floor(until / HOUR) * HOUR
        if end <= start:
            raise ValueError(f"window [{since}, {until}) holds no whole hour")
        return cls(start=start, end=end)

    @property
    def hours(self) -> int:
        return int((self.end - self.start) // HOUR)

    def slot_hours(self) -> np.ndarray:
        """How many hours of the window fall in each hour-of-week slot."""
        first = int(self.start // HOUR)
        return np.bincount(slot_of_hour(np.arange(first, first + self.hours)), minlength=SLOTS)

    def days(self) -> np.ndarray:
        """Epoch day indexes the window touches."""
        return np.arange(int(self.start // DAY), int((self.end - 1) // DAY) + 1)

    def to_wire(self) -> dict[str, Any]:
        return {"start": self.start, "end": self.end, "hours": self.hours}


def rank_quantile(sorted_values: np.ndarray, zeros: int, q: float) -> float:
    """The value at rank ``floor(q·(n-1))`` of ``zeros`` zeros followed by ``sorted_values``
    (the same rank rule as LatencySketch.quantile)."""
    n = zeros + len(sorted_values)
    if n == 0:
        return 0.0
    rank = math.floor(q * (n - 1))
    return 0.0 if rank < zeros else float(sorted_values[rank - zeros])


def _group_quantiles(df: pd.DataFrame, keys: list[str], value: str, totals: pd.Series, q: float) -> pd.Series:
    """Per group of ``keys``: the q-quantile of ``value`` padded with zeros up to ``totals``
    (the group's number of observations, zeros included)."""
    s = df.sort_values([*keys, value])
    grp = s.groupby(keys, sort=False)
    pos = grp.cumcount().to_numpy()
    nonzero = grp[value].transform("size").to_numpy()
    n = totals.reindex(pd.MultiIndex.from_frame(s[keys]) if len(keys) > 1 else s[keys[0]]).to_numpy()
    rank = np.floor(q * (n - 1)).astype("int64")
    zeros = n - nonzero
    hit = pos == rank - zeros
    out = pd.Series(0.0, index=totals.index)
    picked = s.loc[hit, [*keys, value]].set_index(keys)[value].astype("float64")
    out.loc[picked.index] = picked
    return out


def _user_stats(uh: pd.DataFrame, window: Window) -> dict[str, dict[str, Any]]:
    hours = window.hours
    slot_hours = window.slot_hours()
    uh = uh.assign(slot=slot_of_hour(uh["hour"].to_numpy()), sq=uh["requests"].astype("float64") ** 2)
    tot = uh.groupby("user")[["requests", "sq"]].sum()
    users = tot.index
    overall_n = pd.Series(hours, index=users)
    pct = {f"p{int(q * 100)}": _group_quantiles(uh, ["user"], "requests", overall_n, q) for q in (0.5, 0.95, 0.99)}
    by_slot = uh.groupby(["user", "slot"])[["requests", "sq"]].sum()
    slot_index = pd.MultiIndex.from_product([users, range(SLOTS)], names=["user", "slot"])
    by_slot = by_slot.reindex(slot_index, fill_value=0)
    n_slot = np.tile(slot_hours, len(users)).astype("float64")
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_slot = np.where(n_slot > 0, by_slot["requests"].to_numpy() / n_slot, 0.0)
        var_slot = np.where(n_slot > 0, by_slot["sq"].to_numpy() / n_slot - mean_slot**2, 0.0)
    p95_slot = _group_quantiles(uh, ["user", "slot"], "requests", pd.Series(n_slot, index=slot_index), 0.95)
    mean_slot = mean_slot.reshape(len(users), SLOTS)
    std_slot = np.sqrt(np.maximum(var_slot, 0.0)).reshape(len(users), SLOTS)
    p95_slot_arr = p95_slot.to_numpy().reshape(len(users), SLOTS)
    hod = by_slot["requests"].to_numpy().reshape(len(users), 7, 24).sum(axis=1)
    out: dict[str, dict[str, Any]] = {}
    for i, user in enumerate(users):
        total, sq = float(tot.at[user, "requests"]), float(tot.at[user, "sq"])
        mean = total / hours
        share = hod[i] / total if total else hod[i]
        out[str(user)] = {
            "requests": int(total),
            "requestsPerHour": mean,
            "requestsPerHourStd": math.sqrt(max(sq / hours - mean * mean, 0.0)),
            "requestsPerHourPercentiles": {k: float(v.at[user]) for k, v in pct.items()},
            "hourOfWeek": {
                "mean": _r(mean_slot[i]), "std": _r(std_slot[i]), "p95": _r(p95_slot_arr[i]),
            },
            "activeHours": [h for h in range(24) if share[h] >= ACTIVE_HOUR_SHARE],
        }
    return out


def _r(values: np.ndarray) -> list[float]:
    return [round(float(v), 4) for v in values]


def finalize(p: Partials, window: Window, *, alpha: float = DEFAULT_ALPHA) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``user_activity`` and ``service_performance`` documents (shapes in the module doc)."""
    users = _user_stats(p.user_hours, window) if len(p.user_hours) else {}
    us = p.user_services.groupby(["user", "service"]).agg(requests=("requests", "sum"), days=("day", "nunique"))
    active_days = p.user_services.groupby("user")["day"].nunique()
    for (user, service), row in us.iterrows():
        entry = users.get(str(user))
        if entry is None:
            continue
        entry.setdefault("services", {})[str(service)] = int(row["requests"])
        # A user active on a single day has nothing to compare against: all of it is typical.
        if row["days"] >= min(TYPICAL_MIN_DAYS, int(active_days.at[user])):
            entry.setdefault("typicalServices", []).append(str(service))
    days = window.days()
    n_days = window.hours / 24.0
    per_user = p.user_records.groupby("user")
    record_totals = per_user["records"].sum()
    p95_days = _group_quantiles(p.user_records, ["user"], "records", pd.Series(len(days), index=record_totals.index), 0.95)
    for user, entry in users.items():
        entry.setdefault("services", {})
        entry["typicalServices"] = sorted(entry.get("typicalServices", []))
        records = int(record_totals.get(user, 0))
        entry["records"] = records
        entry["recordsPerDay"] = records / n_days
        entry["recordsPerDayP95"] = float(p95_days.get(user, 0.0))
    services = _service_stats(p, window, alpha)
    meta = {"schema": SCHEMA, "window": window.to_wire()}
    return {**meta, "users": users}, {**meta, "services": services}


def _service_stats(p: Partials, window: Window, alpha: float) -> dict[str, Any]:
    slot_hours = window.slot_hours().astype("float64")
    out: dict[str, Any] = {}
    slots = p.svc_slots.groupby(["service", "slot"])[["calls", "failures"]].sum()
    for service, frame in slots.groupby(level="service"):
        per = frame.droplevel("service").reindex(range(SLOTS), fill_value=0)
        calls, failures = int(per["calls"].sum()), int(per["failures"].sum())
        lat = p.svc_latency[p.svc_latency["service"] == service]
        whole = lat.groupby("key")["n"].sum()
        sketch = sketch_from_counts(whole.index.to_numpy(), whole.to_numpy(), alpha)
        p95_slot = []
        for slot, sl in lat.groupby("slot")[["key", "n"]]:
            s = sketch_from_counts(sl["key"].to_numpy(), sl["n"].to_numpy(), alpha)
            p95_slot.append((int(slot), _ms(s.quantile(0.95))))
        p95 = [0.0] * SLOTS
        for slot, v in p95_slot:
            p95[slot] = v
        with np.errstate(divide="ignore", invalid="ignore"):
            rate = np.where(slot_hours > 0, per["calls"].to_numpy() / slot_hours, 0.0)
            err = np.where(per["calls"] > 0, per["failures"].to_numpy() / per["calls"].to_numpy(), 0.0)
        out[str(service)] = {
            "calls": calls,
            "failures": failures,
            "errorRate": failures / calls if calls else 0.0,
            "requestsPerHour": calls / window.hours,
            "latencyMs": {f"p{int(q * 100)}": _ms(sketch.quantile(q)) for q in (0.5, 0.95, 0.99)},
            "hourOfWeek": {"requestsPerHour": _r(rate), "errorRate": _r(err), "p95Ms": p95},
        }
    return out


def _ms(seconds: float | None) -> float:
    return 0.0 if seconds is None else round(seconds * 1000.0, 3)


def plan_partitions(hour_counts: Mapping[int, int], window: Window, max_rows: int) -> list[tuple[float, float]]:
    """Time ranges covering ``window``, cut at hour boundaries, each holding at most ``max_rows``
    events where possible (an hour is never split, so one busy hour can exceed it)."""
    first, last = int(window.start // HOUR), int(window.end // HOUR)
    parts: list[tuple[float, float]] = []
    start, rows = first, 0
    for h in range(first, last):
        n = hour_counts.get(h, 0)
        if rows and rows + n > max_rows:
            parts.append((start * HOUR, h * HOUR))
            start, rows = h, 0
        rows += n
    parts.append((start * HOUR, last * HOUR))
    return parts


def user_baselines(data: Mapping[str, Any]) -> dict[str, UserBaseline]:
    """The ``user_activity`` document as the security analyst's ``UserBaseline`` per user."""
    if data.get("schema") != SCHEMA:
        raise ValueError(f"user_activity baseline schema {data.get('schema')!r}; this code reads {SCHEMA}")
    return {
        user: UserBaseline(
            requests_per_hour=float(u["requestsPerHour"]),
            services=frozenset(u.get("typicalServices", ())),
            records_per_day=float(u.get("recordsPerDay", 0.0)),
        )
        for user, u in data.get("users", {}).items()
    }


__all__ = [
    "SCHEMA", "SERVICE_KIND", "USER_KIND", "ZERO_KEY", "Partials", "Window", "combine", "empty_partials",
    "finalize", "partials", "plan_partitions", "rank_quantile", "sketch_from_counts", "sketch_keys", "slot_of_hour",
    "user_baselines",
]
