"""Label matchers with Alertmanager's semantics and string syntax.

A matcher is ``name op value`` with ``op`` one of ``=``, ``!=``, ``=~``, ``!~``. A missing label
matches as the empty string (so ``team=""`` selects alerts without ``team``). Regexes are anchored
at both ends, as Alertmanager does by wrapping them in ``^(?:…)$``.

String syntax (Alertmanager's ``matchers:`` entries and ``amtool``): one or more matchers separated
by commas, optionally inside ``{…}``; names are plain identifiers or double-quoted; values are
double-quoted (``\\"``, ``\\\\`` and ``\\n`` are unescaped, any other backslash is kept so regex
escapes such as ``\\d`` survive) or unquoted (the text up to the next comma, trimmed).

Rendering (used in group keys) follows Alertmanager: ``name op "value"`` with Go quoting, sorted by
name, then value, then operator, joined by commas inside braces.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum

__all__ = [
    "MatchOp",
    "Matcher",
    "MatcherSyntaxError",
    "format_label_set",
    "format_matchers",
    "go_quote",
    "matchers_from_maps",
    "matches_all",
    "parse_matchers",
]

_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


class MatcherSyntaxError(ValueError):
    """A matcher string or regex could not be parsed; the message shows the text and the position."""


class MatchOp(Enum):
    """Matcher operators; the member order is Alertmanager's (used as the last sort key)."""

    EQ = "="
    NE = "!="
    RE = "=~"
    NRE = "!~"


_OP_ORDER = {MatchOp.EQ: 0, MatchOp.NE: 1, MatchOp.RE: 2, MatchOp.NRE: 3}


@dataclass(frozen=True, kw_only=True)
class Matcher:
    """One label matcher; regex operators hold a compiled, fully anchored pattern."""

    name: str
    op: MatchOp
    value: str
    _regex: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    @classmethod
    def new(cls, name: str, op: MatchOp | str, value: str) -> Matcher:
        """Build a matcher, compiling (and so validating) the regex for ``=~``/``!~``."""
        op = MatchOp(op)
        regex = None
        if op in (MatchOp.RE, MatchOp.NRE):
            try:
                regex = re.compile(f"(?:{value})")
            except re.error as exc:
                raise MatcherSyntaxError(f"invalid regular expression {value!r} for {name}: {exc}") from exc
        return cls(name=name, op=op, value=value, _regex=regex)

    def matches_value(self, value: str) -> bool:
        """Whether a label value (``""`` when absent) satisfies this matcher."""
        if self.op is MatchOp.EQ:
            return value == self.value
        if self.op is MatchOp.NE:
            return value != self.value
        assert self._regex is not None
        hit = self._regex.fullmatch(value) is not None
        return hit if self.op is MatchOp.RE else not hit

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether the label set satisfies this matcher."""
        return self.matches_value(labels.get(self.name, ""))

    def sort_key(self) -> tuple[str, str, int]:
        return (self.name, self.value, _OP_ORDER[self.op])

    def __str__(self) -> str:
        name = self.name if _LABEL_NAME.fullmatch(self.name) else go_quote(self.name)
        return f"{name}{self.op.value}{go_quote(self.value)}"


def matches_all(matchers: Iterable[Matcher], labels: Mapping[str, str]) -> bool:
    """All matchers hold (an empty list matches everything)."""
    return all(m.matches(labels) for m in matchers)


def go_quote(text: str) -> str:
    """Quote like Go's ``strconv.Quote`` for the characters label values use in practice."""
    out = ['"']
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def format_matchers(matchers: Iterable[Matcher]) -> str:
    """``{a="1",b=~"x|y"}`` with Alertmanager's ordering."""
    ordered = sorted(matchers, key=Matcher.sort_key)
    return "{" + ",".join(str(m) for m in ordered) + "}"


def format_label_set(labels: Mapping[str, str]) -> str:
    """Render a label set like Prometheus' ``LabelSet.String``: ``{a="1", b="2"}``."""
    return "{" + ", ".join(f"{k}={go_quote(labels[k])}" for k in sorted(labels)) + "}"


def matchers_from_maps(
    match: Mapping[str, str] | None = None, match_re: Mapping[str, str] | None = None
) -> tuple[Matcher, ...]:
    """The deprecated ``match``/``match_re`` (and ``source_match``…) forms as matchers."""
    out = [Matcher.new(k, MatchOp.EQ, v) for k, v in (match or {}).items()]
    out += [Matcher.new(k, MatchOp.RE, v) for k, v in (match_re or {}).items()]
    return tuple(out)


class _Scanner:
    """A tiny cursor over a matcher string; errors name the text and the column."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def error(self, what: str) -> MatcherSyntaxError:
        return MatcherSyntaxError(f"matcher {self.text!r}: {what} at column {self.pos + 1}")

    def skip_ws(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def quoted(self) -> str:
        assert self.peek() == '"'
        self.pos += 1
        out: list[str] = []
        while self.pos < len(self.text):
            ch = self.text[self.pos]
            self.pos += 1
            if ch == '"':
                return "".join(out)
            if ch == "\\" and self.pos < len(self.text):
                nxt = self.text[self.pos]
                self.pos += 1
                # Alertmanager unescapes only these; other escapes belong to the regex.
                out.append({"n": "\n", '"': '"', "\\": "\\"}.get(nxt, "\\" + nxt))
            else:
                out.append(ch)
        raise self.error("unterminated quoted string")

    def name(self) -> str:
        if self.peek() == '"':
            return self.quoted()
        m = _LABEL_NAME.match(self.text, self.pos)
        if not m:
            raise self.error("expected a label name")
        self.pos = m.end()
        return m.group(0)

    def op(self) -> MatchOp:
        for token in ("=~", "!~", "!=", "="):
            if self.text.startswith(token, self.pos):
                self.pos += len(token)
                return MatchOp(token)
        raise self.error("expected one of =, !=, =~, !~")

    def value(self, closing: str) -> str:
        if self.peek() == '"':
            return self.quoted()
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] not in ("," + closing):
            if self.text[self.pos] == '"':
                raise self.error("unexpected quote inside an unquoted value")
            self.pos += 1
        return self.text[start : self.pos].strip()


def parse_matchers(text: str) -> tuple[Matcher, ...]:
    """Parse ``'a="1", b=~"x|y"'`` or ``'{a=1,b!=2}'`` into matchers (in written order)."""
    s = _Scanner(text)
    s.skip_ws()
    closing = ""
    if s.peek() == "{":
        s.pos += 1
        closing = "}"
    out: list[Matcher] = []
    while True:
        s.skip_ws()
        if s.peek() == closing:  # also true at end of text when there are no braces
            break
        name = s.name()
        s.skip_ws()
        op = s.op()
        s.skip_ws()
        value = s.value(closing)
        out.append(Matcher.new(name, op, value))
        s.skip_ws()
        if s.peek() == ",":
            s.pos += 1
            continue
        if s.peek() != closing:
            raise s.error("expected ',' or the end of the matchers")
        break
    if closing:
        s.pos += 1
        s.skip_ws()
        if s.pos != len(s.text):
            raise s.error("unexpected text after '}'")
    if not out:
        raise MatcherSyntaxError(f"matcher {text!r}: no matchers")
    return tuple(out)
