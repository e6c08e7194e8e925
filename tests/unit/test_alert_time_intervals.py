"""Time intervals: each field, ranges, negative days, locations and DST, at explicit instants."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from policies.alerting.time_intervals import parse_interval, parse_named_intervals


def at(text: str) -> float:
    dt = datetime.fromisoformat(text)
    return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp()


CASES = [
    # (interval, instant, inside?)
    ({"times": [{"start_time": "09:00", "end_time": "17:00"}]}, "2024-06-05T09:00:00", True),
    ({"times": [{"start_time": "09:00", "end_time": "17:00"}]}, "2024-06-05T16:59:59", True),
    (
        {"times": [{"start_time": "09:00", "end_time": "17:00"}]},
        "2024-06-05T17:00:00",
        False,
    ),  # end exclusive
    ({"times": [{"start_time": "22:00", "end_time": "24:00"}]}, "2024-06-05T23:59:00", True),
    ({"weekdays": ["monday:friday"]}, "2024-06-07T12:00:00", True),  # Friday
    ({"weekdays": ["monday:friday"]}, "2024-06-08T12:00:00", False),  # Saturday
    ({"weekdays": ["Saturday", "sunday"]}, "2024-06-09T12:00:00", True),
    ({"days_of_month": ["1:5"]}, "2024-06-05T23:00:00", True),
    ({"days_of_month": ["-1"]}, "2024-02-29T10:00:00", True),  # last day of a leap February
    ({"days_of_month": ["-1"]}, "2024-02-28T10:00:00", False),
    ({"days_of_month": ["-3:-1"]}, "2024-04-28T10:00:00", True),
    ({"days_of_month": ["31"]}, "2024-04-30T10:00:00", False),  # April has no 31st
    ({"days_of_month": ["25:31"]}, "2024-04-30T10:00:00", True),  # a range end past the month stops there
    ({"months": ["june", "8"]}, "2024-08-15T00:00:00", True),
    ({"years": ["2023:2024"]}, "2024-12-31T23:59:59", True),
    ({"years": ["2023:2024"]}, "2025-01-01T00:00:00", False),
    # Berlin office hours: 08:30 UTC in summer is 10:30 in Berlin, 07:30 UTC is 09:30, 06:30 UTC is 08:30
    (
        {"times": [{"start_time": "09:00", "end_time": "17:00"}], "location": "Europe/Berlin"},
        "2024-06-05T06:30:00",
        False,
    ),
    (
        {"times": [{"start_time": "09:00", "end_time": "17:00"}], "location": "Europe/Berlin"},
        "2024-06-05T07:30:00",
        True,
    ),
    (
        {"times": [{"start_time": "09:00", "end_time": "17:00"}], "location": "Europe/Berlin"},
        "2024-01-10T07:30:00",
        False,
    ),  # winter: UTC+1, so 08:30 local
    ({"weekdays": ["saturday"], "location": "America/New_York"}, "2024-06-09T02:00:00", True),  # Sat 22:00 NY
]


@pytest.mark.parametrize(("raw", "instant", "inside"), CASES)
def test_interval_fields(raw: dict, instant: str, inside: bool) -> None:
    """Each field matches as Alertmanager documents, evaluated in the interval's location."""
    assert parse_interval(raw).contains(at(instant)) is inside


def test_named_interval_is_any_of_its_intervals() -> None:
    """A named interval is active when any of its intervals is; an empty one is always active."""
    table = parse_named_intervals(
        [
            {
                "name": "off",
                "time_intervals": [
                    {"weekdays": ["saturday", "sunday"]},
                    {"times": [{"start_time": "00:00", "end_time": "06:00"}]},
                ],
            },
            {"name": "always", "time_intervals": []},
        ],
        "time_intervals",
    )
    assert table["off"].active(at("2024-06-05T05:00:00"))
    assert table["off"].active(at("2024-06-08T12:00:00"))
    assert not table["off"].active(at("2024-06-05T12:00:00"))
    assert table["always"].active(0)


@pytest.mark.parametrize(
    "raw",
    [
        {"times": [{"start_time": "17:00", "end_time": "09:00"}]},
        {"times": [{"start_time": "9", "end_time": "10:00"}]},
        {"times": [{"start_time": "00:00", "end_time": "24:30"}]},
        {"weekdays": ["friday:monday"]},
        {"days_of_month": ["0"]},
        {"days_of_month": ["40"]},
        {"months": ["smarch"]},
        {"months": ["december:february"]},  # ranges do not wrap around the year
        {"weekday": ["monday"]},
        {"location": "Nowhere/City"},
    ],
)
def test_bad_intervals_rejected(raw: dict) -> None:
    """Malformed or impossible interval fields raise ValueError instead of never (or always) matching."""
    with pytest.raises(ValueError):
        parse_interval(raw)
