"""Matchers, fingerprints and time formats: Alertmanager's syntax and semantics."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from policies.alerting.matchers import (
    Matcher,
    MatcherSyntaxError,
    MatchOp,
    format_label_set,
    format_matchers,
    parse_matchers,
)
from policies.alerting.model import Alert, Silence, fingerprint, format_time, parse_time

PARSE_CASES = [
    ('foo="bar"', [("foo", "=", "bar")]),
    ("foo=bar", [("foo", "=", "bar")]),
    ('foo != "bar"', [("foo", "!=", "bar")]),
    ('foo=~"a|b"', [("foo", "=~", "a|b")]),
    ('foo!~"x.*"', [("foo", "!~", "x.*")]),
    ('{foo="bar", baz=~"q"}', [("foo", "=", "bar"), ("baz", "=~", "q")]),
    ('foo="with, comma"', [("foo", "=", "with, comma")]),
    (r'foo="say \"hi\""', [("foo", "=", 'say "hi"')]),
    (r'foo=~"\d+"', [("foo", "=~", r"\d+")]),  # regex escapes survive
    (r'foo="a\\b"', [("foo", "=", "a\\b")]),
    ('foo=""', [("foo", "=", "")]),
    ('"weird name"="x"', [("weird name", "=", "x")]),
    ("a=1,b=2,", [("a", "=", "1"), ("b", "=", "2")]),
    ("  service = payments  ", [("service", "=", "payments")]),
]


@pytest.mark.parametrize(("text", "expected"), PARSE_CASES)
def test_parse_matchers(text: str, expected: list[tuple[str, str, str]]) -> None:
    """Alertmanager's matcher strings (quoted, unquoted, braces, escapes) parse to name/op/value."""
    got = [(m.name, m.op.value, m.value) for m in parse_matchers(text)]
    assert got == expected


@pytest.mark.parametrize(
    "text", ["", "foo", 'foo="a" b="c"', "=bar", 'foo="bar', '{foo="bar"', 'foo=~"("', '{a="1"} x', "1abc=x"]
)
def test_parse_matchers_rejects(text: str) -> None:
    """Malformed matcher strings and invalid regexes are errors, not silently-matching matchers."""
    with pytest.raises(MatcherSyntaxError):
        parse_matchers(text)


MATCH_CASES = [
    # (matcher, labels, matches?)
    ('env="prod"', {"env": "prod"}, True),
    ('env="prod"', {"env": "production"}, False),
    ('env!="prod"', {"env": "dev"}, True),
    ('env!="prod"', {}, True),  # missing label is ""
    ('env=""', {}, True),
    ('env=""', {"env": "x"}, False),
    ('env=~"prod"', {"env": "production"}, False),  # anchored: no substring match
    ('env=~"prod.*"', {"env": "production"}, True),
    ('env=~"a|b"', {"env": "b"}, True),
    ('env=~"a|b"', {"env": "ab"}, False),  # anchoring applies to the whole alternation
    ('env!~"dev|test"', {"env": "prod"}, True),
    ('env!~"dev|test"', {"env": "test"}, False),
    ('env!~".+"', {}, True),
]


@pytest.mark.parametrize(("text", "labels", "expected"), MATCH_CASES)
def test_matcher_semantics(text: str, labels: dict[str, str], expected: bool) -> None:
    """Each operator matches like Alertmanager: missing labels are empty and regexes fully anchored."""
    (m,) = parse_matchers(text)
    assert m.matches(labels) is expected


def test_format_matchers_sorted_and_go_quoted() -> None:
    """Rendering sorts by name, value, operator and quotes like Go (used in group keys)."""
    ms = parse_matchers('z="1", a=~"x\\"y", a="x"')
    assert format_matchers(ms) == '{a="x",a=~"x\\"y",z="1"}'
    assert format_label_set({"b": "2", "a": 'q"'}) == '{a="q\\"", b="2"}'


label_names = st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,8}", fullmatch=True)
label_values = st.text(alphabet=st.characters(blacklist_categories=["Cs", "Cc"]), max_size=12)


@given(name=label_names, op=st.sampled_from([MatchOp.EQ, MatchOp.NE]), value=label_values)
def test_render_then_parse_roundtrips(name: str, op: MatchOp, value: str) -> None:
    """Any equality matcher survives rendering and parsing back unchanged."""
    m = Matcher.new(name, op, value)
    assert parse_matchers(str(m)) == (m,)


def test_fingerprint_matches_prometheus_vectors() -> None:
    """Fingerprints equal Prometheus' published test vectors (so group/alert ids match Alertmanager's)."""
    assert fingerprint({}) == "cbf29ce484222325"
    assert fingerprint({"name": "garland, briggs", "fear": "love is not enough"}) == "507a62d79ee76c9a"
    assert Alert(labels={"a": "1", "b": "2"}, starts_at=0).fingerprint == fingerprint({"b": "2", "a": "1"})


def test_time_format_roundtrip_and_go_nanoseconds() -> None:
    """RFC 3339 times format in UTC with Z and parse back, including Go's 9-digit fractions."""
    assert format_time(1_717_200_000.0) == "2024-06-01T00:00:00Z"
    assert format_time(1_717_200_000.25) == "2024-06-01T00:00:00.250Z"
    assert parse_time("2024-06-01T00:00:00.250000123Z") == pytest.approx(1_717_200_000.25)
    assert parse_time("2024-06-01T02:00:00+02:00") == 1_717_200_000.0


def test_alert_from_api_dict() -> None:
    """An Alertmanager API v2 alert reads into an Alert; a zero endsAt means still firing."""
    a = Alert.from_dict(
        {"labels": {"alertname": "X"}, "startsAt": "2024-06-01T00:00:00Z", "endsAt": "0001-01-01T00:00:00Z"}
    )
    assert a.starts_at == 1_717_200_000.0 and a.ends_at is None and a.status(2e9) == "firing"
    with pytest.raises(ValueError):
        Alert.from_dict({"labels": {}, "startsAt": 0})


def test_silence_api_shape_roundtrip() -> None:
    """Silences read and write Alertmanager's API v2 shape (isRegex/isEqual) and match accordingly."""
    s = Silence.from_dict(
        {
            "id": "s1",
            "matchers": [
                {"name": "team", "value": "db|cache", "isRegex": True, "isEqual": True},
                'env!="dev"',
            ],
            "startsAt": "2024-06-01T00:00:00Z",
            "endsAt": "2024-06-01T01:00:00Z",
            "createdBy": "ops",
            "comment": "maintenance",
        }
    )
    assert s.mutes({"team": "cache", "env": "prod"}, 1_717_200_100.0)
    assert not s.mutes({"team": "cache", "env": "dev"}, 1_717_200_100.0)
    assert not s.mutes({"team": "cache", "env": "prod"}, 1_717_203_600.0)  # endsAt is exclusive
    assert Silence.from_dict(s.to_dict()) == s
