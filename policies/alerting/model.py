"""Alerts and silences as values, with Alertmanager's identity and time conventions.

Times are float epoch seconds inside; the wire (Alertmanager API, webhook payloads) uses RFC 3339
UTC strings. An alert's identity is its fingerprint: FNV-1a 64 over the sorted label names and
values, each followed by the byte 0xff, printed as 16 hex digits (Prometheus
``LabelSet.Fingerprint``, which Alertmanager uses). An alert is resolved at ``now`` when it has an
``ends_at`` that is not after ``now`` (Alertmanager ``ResolvedAt``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property, lru_cache
from typing import Any, Literal

from policies.alerting.matchers import Matcher, MatchOp, matches_all, parse_matchers
from protocol.base import epoch_from_rfc3339, rfc3339_from_epoch

__all__ = [
    "GO_ZERO_TIME",
    "SEVERITIES",
    "Alert",
    "Silence",
    "fingerprint",
    "format_time",
    "parse_time",
]

#: Severities used by sfa-ops (seed, "Alert Severity Levels"), least to most severe.
SEVERITIES: tuple[str, ...] = ("info", "warning", "error", "critical", "emergency")

#: How Go renders a zero ``time.Time``; Alertmanager sends it as ``endsAt`` of firing alerts.
GO_ZERO_TIME = "0001-01-01T00:00:00Z"

_FNV_OFFSET = 14695981039346656037
_FNV_PRIME = 1099511628211
_MASK = (1 << 64) - 1


def fingerprint(labels: Mapping[str, str]) -> str:
    """Alertmanager's alert fingerprint of a label set, as 16 lowercase hex digits."""
    return _fingerprint_items(tuple(sorted(labels.items())))


def clear_fingerprint_cache() -> None:
    """Forget memoised fingerprints (benchmarks measure cold hashing with this)."""
    _fingerprint_items.cache_clear()


@lru_cache(maxsize=65536)  # the same alerts are re-sent again and again; the hash loop is the cost
def _fingerprint_items(items: tuple[tuple[str, str], ...]) -> str:
    data = b"".join(k.encode() + b"\xff" + v.encode() + b"\xff" for k, v in items)
    h, prime, mask = _FNV_OFFSET, _FNV_PRIME, _MASK
    for byte in data:
        h = ((h ^ byte) * prime) & mask
    return f"{h:016x}"


def format_time(ts: float) -> str:
    """Epoch seconds → RFC 3339 UTC (``protocol.base``: ``2024-05-01T12:00:00Z``, milliseconds when present)."""
    return rfc3339_from_epoch(ts)


def parse_time(value: Any) -> float:
    """Epoch seconds from a number or an RFC 3339 string (nanosecond fractions are truncated)."""
    if isinstance(value, bool):
        raise ValueError(f"a time (epoch seconds or RFC 3339), got {value!r}")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    if not isinstance(value, str):
        raise ValueError(f"a time (epoch seconds or RFC 3339), got {value!r}")
    return epoch_from_rfc3339(value)


def _str_map(raw: Any, what: str) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ValueError(f"{what} must be a mapping of strings, got {raw!r}")
    return {str(k): str(v) for k, v in raw.items()}


@dataclass(frozen=True, kw_only=True)
class Alert:
    """One alert instance. ``labels`` identify it; treat the mappings as read-only."""

    labels: Mapping[str, str]
    annotations: Mapping[str, str] = field(default_factory=dict)
    starts_at: float
    ends_at: float | None = None
    generator_url: str = ""

    @cached_property
    def fingerprint(self) -> str:
        """Alertmanager fingerprint of the labels."""
        return fingerprint(self.labels)

    def resolved(self, now: float) -> bool:
        """Whether the alert has ended at ``now``."""
        return self.ends_at is not None and self.ends_at <= now

    def status(self, now: float) -> Literal["firing", "resolved"]:
        """``"resolved"`` once ``ends_at`` has passed, else ``"firing"``."""
        return "resolved" if self.resolved(now) else "firing"

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for persistence (times as epoch seconds, so nothing is rounded)."""
        return {
            "labels": dict(self.labels),
            "annotations": dict(self.annotations),
            "startsAt": self.starts_at,
            "endsAt": self.ends_at,
            "generatorURL": self.generator_url,
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], *, now: float | None = None) -> Alert:
        """From :meth:`to_dict` or an Alertmanager API v2 alert (RFC 3339 times).

        ``startsAt`` may be omitted when ``now`` is given (Alertmanager stamps it on receipt).
        """
        labels = _str_map(raw.get("labels"), "labels")
        if not labels:
            raise ValueError("an alert needs at least one label")
        starts = raw.get("startsAt")
        if starts in (None, "", GO_ZERO_TIME):
            if now is None:
                raise ValueError("an alert needs startsAt")
            starts_at = now
        else:
            starts_at = parse_time(starts)
        ends = raw.get("endsAt")
        return cls(
            labels=labels,
            annotations=_str_map(raw.get("annotations"), "annotations"),
            starts_at=starts_at,
            ends_at=None if ends in (None, "", GO_ZERO_TIME) else parse_time(ends),
            generator_url=str(raw.get("generatorURL") or ""),
        )


@dataclass(frozen=True, kw_only=True)
class Silence:
    """A silence mutes every alert its matchers select while ``starts_at <= now < ends_at``."""

    id: str
    matchers: tuple[Matcher, ...]
    starts_at: float
    ends_at: float
    created_by: str = ""
    comment: str = ""

    def active(self, now: float) -> bool:
        """Whether the silence is in effect at ``now``."""
        return self.starts_at <= now < self.ends_at

    def mutes(self, labels: Mapping[str, str], now: float) -> bool:
        """Whether this silence mutes an alert with these labels at ``now``."""
        return self.active(now) and matches_all(self.matchers, labels)

    def to_dict(self) -> dict[str, Any]:
        """Alertmanager API v2 silence shape (times as RFC 3339)."""
        return {
            "id": self.id,
            "matchers": [
                {
                    "name": m.name,
                    "value": m.value,
                    "isRegex": m.op in (MatchOp.RE, MatchOp.NRE),
                    "isEqual": m.op in (MatchOp.EQ, MatchOp.RE),
                }
                for m in self.matchers
            ],
            "startsAt": format_time(self.starts_at),
            "endsAt": format_time(self.ends_at),
            "createdBy": self.created_by,
            "comment": self.comment,
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Silence:
        """From the API v2 shape; matchers may also be matcher strings (``'team="db"'``)."""
        matchers: list[Matcher] = []
        for m in raw.get("matchers") or []:
            if isinstance(m, str):
                matchers.extend(parse_matchers(m))
                continue
            regex, equal = bool(m.get("isRegex")), m.get("isEqual", True) is not False
            op = {(False, True): "=", (False, False): "!=", (True, True): "=~", (True, False): "!~"}
            matchers.append(Matcher.new(str(m["name"]), op[(regex, equal)], str(m["value"])))
        if not matchers:
            raise ValueError("a silence needs at least one matcher")
        starts_at, ends_at = parse_time(raw["startsAt"]), parse_time(raw["endsAt"])
        if ends_at <= starts_at:
            raise ValueError("a silence must end after it starts")
        return cls(
            id=str(raw.get("id") or ""),
            matchers=tuple(matchers),
            starts_at=starts_at,
            ends_at=ends_at,
            created_by=str(raw.get("createdBy") or ""),
            comment=str(raw.get("comment") or ""),
        )
