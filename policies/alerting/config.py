"""Alerting policy file: Alertmanager's configuration format (the parts that matter) plus the seed's.

Accepted top level (optionally wrapped in ``alerting:``, as the seed writes it):

- ``route:`` — Alertmanager's tree; the root needs a ``receiver`` and may not have matchers or
  time intervals (Alertmanager's rules);
- ``routes:`` — the seed's shorthand: the children of an implicit root that has no receiver, so an
  alert no child takes is *unrouted* (counted by the dispatcher, kept as an inhibition source);
- ``receivers``, ``inhibit_rules``, ``time_intervals`` (and the deprecated top-level
  ``mute_time_intervals``), ``global`` and ``templates`` (accepted; of ``global`` only
  ``resolve_timeout`` is used: default 1 h, at least 3 m, see ``AlertingPolicy.resolve_timeout``).

Route keys: ``receiver``, ``group_by`` (``['...']`` = all labels), ``continue``, ``matchers``,
``match``, ``match_re``, ``group_wait``, ``group_interval``, ``repeat_interval``,
``mute_time_intervals``, ``active_time_intervals``, ``routes``. Durations may be compound
(``1h30m``). Unknown keys are errors, as in Alertmanager. Errors name the file and the route path.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, model_validator

from policies.alerting.forwarding import forward_targets
from policies.alerting.matchers import (
    Matcher,
    MatcherSyntaxError,
    MatchOp,
    matchers_from_maps,
    parse_matchers,
)
from policies.alerting.model import SEVERITIES
from policies.alerting.receivers import Receiver, parse_receiver
from policies.alerting.routing import (
    DEFAULT_RESOLVE_TIMEOUT,
    MIN_RESOLVE_TIMEOUT,
    AlertingPolicy,
    InhibitRule,
    Route,
    RouteOpts,
)
from policies.alerting.time_intervals import parse_named_intervals
from policies.common.config import (
    PolicyConfigError,
    PolicyModel,
    format_duration,
    load_policy,
    load_policy_text,
    parse_duration,
    read_text,
)

__all__ = [
    "DEFAULT_FILE",
    "AlertingConfig",
    "alerting_policy_from_text",
    "compile_policy",
    "load_alerting_policy",
]

DEFAULT_FILE = "alerting.yaml"

_COMPOUND = re.compile(r"^(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?$")
_COMPOUND_UNITS = (365 * 86400.0, 7 * 86400.0, 86400.0, 3600.0, 60.0, 1.0, 0.001)
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def _am_duration(value: Any) -> float:
    """Alertmanager durations (``1h30m``, ``1d``, ``2w``) or sfa-ops' (``250ms``, ``90``)."""
    if isinstance(value, str) and value.strip():
        m = _COMPOUND.match(value.strip())
        if m and any(m.groups()):
            return sum(int(g) * u for g, u in zip(m.groups(), _COMPOUND_UNITS, strict=True) if g)
    return parse_duration(value)


def _label_map(value: Any) -> Any:
    # YAML turns `code: 500` or `page: true` into non-strings; Alertmanager reads them as text.
    if isinstance(value, Mapping):
        return {
            str(k): ("true" if v is True else "false" if v is False else str(v)) for k, v in value.items()
        }
    return value


Duration = Annotated[float, BeforeValidator(_am_duration)]
LabelMap = Annotated[dict[str, str], BeforeValidator(_label_map)]


class RouteConfig(PolicyModel):
    """One ``route`` node as written."""

    receiver: str | None = None
    group_by: list[str] | None = None
    continue_: bool = Field(default=False, alias="continue")
    match: LabelMap = Field(default_factory=dict)
    match_re: LabelMap = Field(default_factory=dict)
    matchers: list[str] = Field(default_factory=list)
    group_wait: Duration | None = None
    group_interval: Duration | None = None
    repeat_interval: Duration | None = None
    mute_time_intervals: list[str] = Field(default_factory=list)
    active_time_intervals: list[str] = Field(default_factory=list)
    routes: list[RouteConfig] = Field(default_factory=list)


class InhibitRuleConfig(PolicyModel):
    """One ``inhibit_rules`` entry (new ``*_matchers`` and old ``*_match``/``*_match_re`` forms)."""

    source_matchers: list[str] = Field(default_factory=list)
    target_matchers: list[str] = Field(default_factory=list)
    source_match: LabelMap = Field(default_factory=dict)
    source_match_re: LabelMap = Field(default_factory=dict)
    target_match: LabelMap = Field(default_factory=dict)
    target_match_re: LabelMap = Field(default_factory=dict)
    equal: list[str] = Field(default_factory=list)


class AlertingConfig(PolicyModel):
    """The whole file as written (receivers and time intervals are normalised when compiling)."""

    global_: dict[str, Any] = Field(default_factory=dict, alias="global")
    templates: list[str] = Field(default_factory=list)
    route: RouteConfig | None = None
    routes: list[RouteConfig] | None = None
    receivers: list[Any] = Field(default_factory=list)
    inhibit_rules: list[InhibitRuleConfig] = Field(default_factory=list)
    time_intervals: list[dict[str, Any]] = Field(default_factory=list)
    mute_time_intervals: list[dict[str, Any]] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _unwrap(cls, data: Any) -> Any:
        # The seed nests everything under `alerting:`.
        if isinstance(data, Mapping) and set(data) == {"alerting"} and isinstance(data["alerting"], Mapping):
            return data["alerting"]
        return data


class _Compiler:
    """Turns an :class:`AlertingConfig` into an :class:`AlertingPolicy`, collecting path-named errors."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.receivers: dict[str, Receiver] = {}
        self.interval_names: set[str] = set()

    def fail(self, where: str, message: str) -> PolicyConfigError:
        return PolicyConfigError(f"{self.source}: {where}: {message}")

    def matchers(self, where: str, texts: list[str], *maps: Mapping[str, str]) -> tuple[Matcher, ...]:
        try:
            out = list(matchers_from_maps(*maps))
            for text in texts:
                out.extend(parse_matchers(text))
        except MatcherSyntaxError as exc:
            raise self.fail(where, str(exc)) from exc
        return tuple(sorted(out, key=Matcher.sort_key))

    def route(self, cfg: RouteConfig, parent: Route | None, where: str, children_at: str = "") -> Route:
        matchers = self.matchers(where, cfg.matchers, cfg.match, cfg.match_re)
        for m in matchers:
            if m.name == "severity" and m.op in (MatchOp.EQ, MatchOp.NE) and m.value not in SEVERITIES:
                raise self.fail(where, f"severity {m.value!r} is not one of {', '.join(SEVERITIES)}")
        base = parent.opts if parent else RouteOpts(receiver=None)
        if cfg.receiver is not None and cfg.receiver not in self.receivers:
            declared = ", ".join(sorted(self.receivers)) or "none"
            raise self.fail(
                where, f"receiver {cfg.receiver!r} is not declared in receivers (declared: {declared})"
            )
        group_by, group_by_all = base.group_by, base.group_by_all
        if cfg.group_by is not None:
            group_by, group_by_all = self.group_by(cfg.group_by, where)
        for name in cfg.mute_time_intervals + cfg.active_time_intervals:
            if name not in self.interval_names:
                known = ", ".join(sorted(self.interval_names)) or "none"
                raise self.fail(where, f"time interval {name!r} is not declared (declared: {known})")
        for key in ("group_interval", "repeat_interval"):
            if getattr(cfg, key) == 0:
                raise self.fail(where, f"{key} cannot be zero")
        opts = RouteOpts(
            receiver=cfg.receiver if cfg.receiver is not None else base.receiver,
            group_by=group_by,
            group_by_all=group_by_all,
            group_wait=base.group_wait if cfg.group_wait is None else cfg.group_wait,
            group_interval=base.group_interval if cfg.group_interval is None else cfg.group_interval,
            repeat_interval=base.repeat_interval if cfg.repeat_interval is None else cfg.repeat_interval,
            mute_time_intervals=tuple(cfg.mute_time_intervals),
            active_time_intervals=tuple(cfg.active_time_intervals),
        )
        own = "{" + ",".join(str(m) for m in matchers) + "}"
        node = Route(
            id=where,
            key=f"{parent.key}/{own}" if parent else own,
            matchers=matchers,
            continue_=cfg.continue_,
            opts=opts,
        )
        at = children_at or f"{where}.routes"
        children = tuple(self.route(c, node, f"{at}[{i}]") for i, c in enumerate(cfg.routes))
        return Route(
            id=node.id, key=node.key, matchers=matchers, continue_=node.continue_, opts=opts, routes=children
        )

    def resolve_timeout(self, settings: Mapping[str, Any]) -> float:
        raw = settings.get("resolve_timeout")
        if raw is None:
            return DEFAULT_RESOLVE_TIMEOUT
        try:
            value = _am_duration(raw)
        except ValueError as exc:
            raise self.fail("global.resolve_timeout", str(exc)) from exc
        if value < MIN_RESOLVE_TIMEOUT:
            raise self.fail("global.resolve_timeout", f"{raw!r} is shorter than {format_duration(MIN_RESOLVE_TIMEOUT)} "
                            "(sfa-ops re-sends the alerts it holds every minute; a shorter timeout would make them flap)")
        return value

    def group_by(self, names: list[str], where: str) -> tuple[frozenset[str], bool]:
        if "..." in names:
            if len(names) > 1:
                raise self.fail(where, "group_by: '...' (all labels) cannot be combined with other labels")
            return frozenset(), True
        seen: set[str] = set()
        for name in names:
            if not _LABEL_NAME.match(name):
                raise self.fail(where, f"group_by: {name!r} is not a valid label name")
            if name in seen:
                raise self.fail(where, f"group_by: label {name!r} is listed twice")
            seen.add(name)
        return frozenset(names), False

    def compile(self, cfg: AlertingConfig) -> AlertingPolicy:
        for i, raw in enumerate(cfg.receivers):
            try:
                rcv = parse_receiver(raw, f"receivers[{i}]")
            except ValueError as exc:
                raise PolicyConfigError(f"{self.source}: {exc}") from exc
            if rcv.name in self.receivers:
                raise self.fail(f"receivers[{i}]", f"receiver name {rcv.name!r} is not unique")
            self.receivers[rcv.name] = rcv
        try:
            intervals = parse_named_intervals(cfg.time_intervals + cfg.mute_time_intervals, "time_intervals")
        except ValueError as exc:
            raise PolicyConfigError(f"{self.source}: {exc}") from exc
        self.interval_names = set(intervals)
        if cfg.route is not None and cfg.routes is not None:
            raise self.fail("routes", "give either route: (Alertmanager) or routes: (shorthand), not both")
        if cfg.route is not None:
            root_cfg, where = cfg.route, "route"
            if not root_cfg.receiver:
                raise self.fail(where, "the root route must name a default receiver")
            if root_cfg.matchers or root_cfg.match or root_cfg.match_re:
                raise self.fail(where, "the root route must not have matchers")
            if root_cfg.mute_time_intervals or root_cfg.active_time_intervals:
                raise self.fail(where, "the root route must not have time intervals")
        elif cfg.routes is not None:
            root_cfg, where = RouteConfig(routes=cfg.routes), "routes"
        else:
            raise self.fail("route", "no routing tree: add route: (or the seed's routes: list)")
        # Shorthand: the children are routes[i] (as written), not routes.routes[i].
        root = self.route(root_cfg, None, where, "routes" if cfg.routes is not None else "")
        rules = []
        for i, r in enumerate(cfg.inhibit_rules):
            at = f"inhibit_rules[{i}]"
            for name in r.equal:
                if not _LABEL_NAME.match(name):
                    raise self.fail(at, f"equal: {name!r} is not a valid label name")
            rules.append(
                InhibitRule(
                    source=self.matchers(at, r.source_matchers, r.source_match, r.source_match_re),
                    target=self.matchers(at, r.target_matchers, r.target_match, r.target_match_re),
                    equal=tuple(r.equal),
                )
            )
        return AlertingPolicy(
            resolve_timeout=self.resolve_timeout(cfg.global_),
            root=root,
            receivers=self.receivers,
            inhibit_rules=tuple(rules),
            time_intervals=intervals,
            source=self.source,
        )


def compile_policy(cfg: AlertingConfig, source: str = "<string>") -> AlertingPolicy:
    """Validate references (receivers, time intervals) and build the immutable tree."""
    policy = _Compiler(source).compile(cfg)
    try:
        forward_targets(policy, [])  # an alertmanager integration's resend_interval, checked now
    except ValueError as exc:
        raise PolicyConfigError(f"{source}: {exc}") from exc
    return policy


def load_alerting_policy(overrides_dir: Path | str | None = None) -> AlertingPolicy:
    """The shipped ``policies/alerting.yaml``, or ``overrides_dir/alerting.yaml`` instead of it.

    Unlike the other policies, an alerting override *replaces* the default: an Alertmanager
    configuration is one document (a ``route:`` tree merged into the seed's ``routes:`` list would
    be neither), so it is loaded as written."""
    if overrides_dir is not None and (Path(overrides_dir) / DEFAULT_FILE).exists():
        path = Path(overrides_dir) / DEFAULT_FILE
        return alerting_policy_from_text(read_text(path), str(path))
    cfg = load_policy(AlertingConfig, DEFAULT_FILE, overrides_dir)
    return compile_policy(cfg, DEFAULT_FILE)


def alerting_policy_from_text(text: str, source: str = "<string>") -> AlertingPolicy:
    """Build a policy from a YAML string (tests do this, as Alertmanager's route tests do)."""
    return compile_policy(load_policy_text(AlertingConfig, text, source), source)
