"""Alertmanager time intervals (``time_intervals:``), evaluated at an injected instant.

An interval matches when every field it sets matches (unset fields match anything); a named
interval is active when any of its intervals matches. Fields, as Alertmanager documents them:

- ``times``: ``[{start_time: "HH:MM", end_time: "HH:MM"}]``, start inclusive, end exclusive,
  ``24:00`` allowed as an end;
- ``weekdays``: ``monday``, ``monday:friday`` (inclusive ranges, case-insensitive);
- ``days_of_month``: ``1``, ``1:5``, negative days count from the month's end (``-1`` is the
  last day, ``-3:-1`` the last three);
- ``months``: names or numbers, ranges inclusive;
- ``years``: ``2024`` or ``2024:2026``;
- ``location``: ``UTC``, ``Local`` (treated as UTC: policies must not depend on the host) or an
  IANA name resolved with ``zoneinfo``.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["NamedTimeInterval", "TimeInterval", "any_active", "parse_named_intervals"]

_WEEKDAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
_MONTHS = [m.lower() for m in calendar.month_name[1:]]
_FIELDS = {"times", "weekdays", "days_of_month", "months", "years", "location"}


@dataclass(frozen=True, kw_only=True)
class TimeInterval:
    """One interval; each field is a tuple of inclusive ranges, empty meaning "any"."""

    minutes: tuple[tuple[int, int], ...] = ()  # [start, end) in minutes of the day
    weekdays: tuple[tuple[int, int], ...] = ()  # 0 = Monday
    days_of_month: tuple[tuple[int, int], ...] = ()
    months: tuple[tuple[int, int], ...] = ()
    years: tuple[tuple[int, int], ...] = ()
    location: tzinfo = UTC

    def contains(self, now: float) -> bool:
        """Whether the instant ``now`` (epoch seconds) falls inside this interval."""
        t = datetime.fromtimestamp(now, tz=self.location)
        if self.minutes:
            minute = t.hour * 60 + t.minute
            if not any(a <= minute < b for a, b in self.minutes):
                return False
        if self.weekdays and not _in(t.weekday(), self.weekdays):
            return False
        if self.days_of_month:
            last = calendar.monthrange(t.year, t.month)[1]
            if not any(_start(a, last) <= t.day <= _end(b, last) for a, b in self.days_of_month):
                return False
        if self.months and not _in(t.month, self.months):
            return False
        return not (self.years and not _in(t.year, self.years))


@dataclass(frozen=True, kw_only=True)
class NamedTimeInterval:
    """A ``time_intervals`` entry: active when any of its intervals contains ``now``."""

    name: str
    intervals: tuple[TimeInterval, ...]

    def active(self, now: float) -> bool:
        # An entry with no intervals is "always" in Alertmanager (empty interval matches all).
        return not self.intervals or any(i.contains(now) for i in self.intervals)


def any_active(names: Iterable[str], table: Mapping[str, NamedTimeInterval], now: float) -> bool:
    """Whether any of the named intervals is active at ``now``."""
    return any(table[n].active(now) for n in names)


def _in(value: int, ranges: Sequence[tuple[int, int]]) -> bool:
    return any(a <= value <= b for a, b in ranges)


def _start(day: int, last: int) -> int:
    # Negative days count back from the month's end (-1 is the last day).
    return max(1, last + day + 1) if day < 0 else day


def _end(day: int, last: int) -> int:
    # An end beyond the month (1:31 in April) stops at the last day; a start beyond it never matches.
    return last + day + 1 if day < 0 else min(day, last)


def _hhmm(text: Any, what: str) -> int:
    if not isinstance(text, str) or len(text.split(":")) != 2:
        raise ValueError(f"{what} must be 'HH:MM', got {text!r}")
    hh, mm = text.split(":")
    if not (hh.isdigit() and mm.isdigit()):
        raise ValueError(f"{what} must be 'HH:MM', got {text!r}")
    h, m = int(hh), int(mm)
    if not (0 <= h <= 24 and 0 <= m < 60) or (h == 24 and m != 0):
        raise ValueError(f"{what} {text!r} is not a time of day between 00:00 and 24:00")
    return h * 60 + m


def _ranges(items: Any, what: str, parse_one: Any, low: int, high: int) -> tuple[tuple[int, int], ...]:
    if not isinstance(items, list):
        raise ValueError(f"{what} must be a list, got {items!r}")
    out = []
    for item in items:
        text = str(item).strip().lower()
        parts = text.split(":") if ":" in text else [text, text]
        if len(parts) != 2:
            raise ValueError(f"{what}: {item!r} is not a value or a 'start:end' range")
        a, b = parse_one(parts[0], item), parse_one(parts[1], item)
        for v in (a, b):
            if not low <= v <= high:
                raise ValueError(f"{what}: {item!r} is outside {low}..{high}")
        if (a < 0) == (b < 0) and a > b:
            raise ValueError(f"{what}: {item!r} starts after it ends")
        out.append((a, b))
    return tuple(out)


def _named(table: list[str], offset: int) -> Any:
    def parse(token: str, item: Any) -> int:
        if token in table:
            return table.index(token) + offset
        if token.lstrip("-").isdigit():
            return int(token)
        raise ValueError(f"{item!r}: {token!r} is not one of {', '.join(table)}")

    return parse


def _integer(token: str, item: Any) -> int:
    if not token.lstrip("-").isdigit():
        raise ValueError(f"{item!r} is not a number or a 'start:end' range of numbers")
    return int(token)


def _location(name: Any) -> tzinfo:
    if name in (None, "UTC", "Local", "local"):
        return UTC
    try:
        return ZoneInfo(str(name))
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"location {name!r} is not 'UTC' or an IANA time zone name") from exc


def parse_interval(raw: Mapping[str, Any]) -> TimeInterval:
    """Validate one Alertmanager interval mapping; errors say which field and value."""
    unknown = set(raw) - _FIELDS
    if unknown:
        raise ValueError(f"unknown key(s) {sorted(unknown)}; allowed: {sorted(_FIELDS)}")
    minutes = []
    for t in raw.get("times") or []:
        if not isinstance(t, Mapping) or set(t) != {"start_time", "end_time"}:
            raise ValueError(f"times entries need start_time and end_time, got {t!r}")
        a, b = _hhmm(t["start_time"], "start_time"), _hhmm(t["end_time"], "end_time")
        if a >= b:
            raise ValueError(f"times: start_time {t['start_time']} must be before end_time {t['end_time']}")
        minutes.append((a, b))
    dom = _ranges(raw.get("days_of_month") or [], "days_of_month", _integer, -31, 31)
    if any(a == 0 or b == 0 for a, b in dom):
        raise ValueError("days_of_month: 0 is not a day (use 1..31 or -31..-1)")
    return TimeInterval(
        minutes=tuple(minutes),
        weekdays=_ranges(raw.get("weekdays") or [], "weekdays", _named(_WEEKDAYS, 0), 0, 6),
        days_of_month=dom,
        months=_ranges(raw.get("months") or [], "months", _named(_MONTHS, 1), 1, 12),
        years=_ranges(raw.get("years") or [], "years", _integer, 1, 9999),
        location=_location(raw.get("location")),
    )


def parse_named_intervals(entries: Iterable[Mapping[str, Any]], where: str) -> dict[str, NamedTimeInterval]:
    """``[{name, time_intervals: [...]}, ...]`` → table by name; duplicate names are errors."""
    table: dict[str, NamedTimeInterval] = {}
    for i, entry in enumerate(entries):
        name = entry.get("name")
        if not isinstance(name, str) or not name:
            raise ValueError(f"{where}[{i}]: every time interval needs a name")
        if name in table:
            raise ValueError(f"{where}[{i}]: time interval name {name!r} is not unique")
        items = entry.get("time_intervals") or []
        if not isinstance(items, list):
            raise ValueError(f"{where}[{i}] ({name}): time_intervals must be a list")
        parsed = []
        for j, raw in enumerate(items):
            if not isinstance(raw, Mapping):
                raise ValueError(f"{where}[{i}].time_intervals[{j}] ({name}): must be a mapping")
            try:
                parsed.append(parse_interval(raw))
            except ValueError as exc:
                raise ValueError(f"{where}[{i}].time_intervals[{j}] ({name}): {exc}") from exc
        table[name] = NamedTimeInterval(name=name, intervals=tuple(parsed))
    return table
