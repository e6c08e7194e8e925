"""Scripted faults for the sample platform, as data, with their runner and their verdicts.

A :class:`Scenario` is a list of :class:`Step` s — at offset ``at`` seconds do ``action`` (crash or
restart a service's instances, switch its fault mode, publish malformed traffic on its topic) —
each with the :class:`Expect` ations of what sfa-ops should (or should not) publish on
``system/{cluster}/…`` within some seconds. :func:`run_scenario` performs the steps on a
:class:`Platform` and returns when each was injected; :func:`evaluate` (pure) matches what was
recorded on the broker against the expectations: first matching message, detection latency, met.

Timings assume the short demo policies of ``drivers/demo_policies/`` (call timeout 3 s, breaker
minimum 5 calls, open 5 s, health window 15 s).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from drivers.sample_platform import FaultMode

ActionKind = Literal["crash", "restart", "mode", "malformed"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Action:
    """One thing done to the platform."""

    kind: ActionKind
    service: str
    mode: FaultMode | None = None

    def describe(self) -> str:
        if self.kind == "mode" and self.mode is not None:
            m = self.mode
            extra = f", delay {m.delay:g}s" if m.mode == "slow" else ""
            return f"{self.service}: mode {m.mode} (rate {m.rate:g}{extra})"
        what = {"crash": "SIGKILL every instance of", "restart": "restart every instance of",
                "malformed": "publish malformed payloads on service/"}[self.kind]
        return f"{what}{'' if self.kind == 'malformed' else ' '}{self.service}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Expect:
    """What sfa-ops should publish on ``system/{cluster}/{topic}`` within ``within`` s of the step.

    ``match`` holds alternatives (any one suffices); a field matches when equal, or — for a list
    in the message — when it contains the value. ``absent`` inverts it: nothing may match.
    ``rises`` (a dotted path, e.g. ``observed.malformed``) asks instead for a message whose value
    there is above its value in the last message before the step.
    """

    label: str
    topic: str
    within: float
    match: tuple[Mapping[str, Any], ...] = ()
    absent: bool = False
    rises: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Step:
    at: float
    action: Action
    expect: tuple[Expect, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Scenario:
    name: str
    description: str
    steps: tuple[Step, ...]
    length: float
    """Seconds from start to end, steady periods included."""


# ------------------------------------------------------------------ building blocks


def _published(label: str, topic: str, within: float, *alternatives: Mapping[str, Any]) -> Expect:
    return Expect(label=label, topic=topic, within=within, match=tuple(alternatives))


def _none_published(label: str, topic: str, within: float, *alternatives: Mapping[str, Any]) -> Expect:
    return Expect(label=label, topic=topic, within=within, match=tuple(alternatives), absent=True)


def crash_and_restart(service: str, *, at: float, down_for: float = 8.0,
                      dependents: Sequence[str] = ()) -> tuple[Step, ...]:
    """SIGKILL every instance (expect service_unavailable, cascades for ``dependents``), restart."""
    crash_expect = [_published(f"service_unavailable for {service}", "errors", 5.0,
                               {"type": "service_unavailable", "service": service})]
    crash_expect += [_published(f"cascading_failure_prevented naming {d}", "errors", 5.0,
                                {"type": "cascading_failure_prevented", "originService": service,
                                 "affectedServices": d}) for d in dependents]
    return (
        Step(at=at, action=Action(kind="crash", service=service), expect=tuple(crash_expect)),
        Step(at=at + down_for, action=Action(kind="restart", service=service),
             expect=(_published(f"service_recovered for {service}", "errors", 20.0,
                                {"type": "service_recovered", "service": service}),)),
    )


def error_spike(service: str, *, at: float, lasting: float = 10.0) -> tuple[Step, ...]:
    """Every call fails with -32603 (expect the breaker to open), then normal (half_open → closed)."""
    return (
        Step(at=at, action=Action(kind="mode", service=service, mode=FaultMode(mode="internal_errors", rate=1.0)),
             expect=(_published(f"breaker open for {service}", "circuit-breaker", 8.0,
                                {"service": service, "to": "open"}),)),
        Step(at=at + lasting, action=Action(kind="mode", service=service, mode=FaultMode()),
             expect=(_published(f"breaker half_open for {service}", "circuit-breaker", 10.0,
                                {"service": service, "to": "half_open"}),
                     _published(f"breaker closed for {service}", "circuit-breaker", 15.0,
                                {"service": service, "to": "closed"}))),
    )


def slow_responses(service: str, *, at: float, lasting: float = 12.0, delay: float = 6.0,
                   rate: float = 0.5) -> tuple[Step, ...]:
    """A share of calls take ``delay`` s (expect service_degraded high_latency)."""
    return (
        Step(at=at, action=Action(kind="mode", service=service,
                                  mode=FaultMode(mode="slow", rate=rate, delay=delay)),
             expect=(_published(f"service_degraded (high_latency) for {service}", "errors", lasting,
                                {"type": "service_degraded", "service": service, "reasons": "high_latency"}),)),
        Step(at=at + lasting, action=Action(kind="mode", service=service, mode=FaultMode())),
    )


def hung_service(service: str, *, at: float, lasting: float = 12.0) -> tuple[Step, ...]:
    """Calls are never answered (expect timeouts to open the breaker or degrade the service)."""
    return (
        Step(at=at, action=Action(kind="mode", service=service, mode=FaultMode(mode="hang")),
             expect=(_published(f"breaker open or service_degraded for {service}", "#", 10.0,
                                {"service": service, "to": "open"},
                                {"type": "service_degraded", "service": service}),)),
        Step(at=at + lasting, action=Action(kind="mode", service=service, mode=FaultMode()),
             expect=(_published(f"breaker closed for {service}", "circuit-breaker", 16.0,
                                {"service": service, "to": "closed"}),)),
    )


def validation_storm(service: str, *, at: float, lasting: float = 10.0) -> tuple[Step, ...]:
    """Every call is refused -32001, the caller's fault (expect NO breaker opening, no degradation)."""
    return (
        Step(at=at, action=Action(kind="mode", service=service,
                                  mode=FaultMode(mode="validation_errors", rate=1.0)),
             expect=(_none_published(f"no breaker opening for {service}", "circuit-breaker", lasting + 3.0,
                                     {"service": service, "to": "open"}),
                     _none_published(f"no service_degraded for {service}", "errors", lasting + 3.0,
                                     {"type": "service_degraded", "service": service}))),
        Step(at=at + lasting, action=Action(kind="mode", service=service, mode=FaultMode())),
    )


def malformed_traffic(service: str, *, at: float) -> tuple[Step, ...]:
    """Garbage on service/{service} (expect observed.malformed to rise, nothing else)."""
    return (
        Step(at=at, action=Action(kind="malformed", service=service),
             expect=(Expect(label="health observed.malformed rises", topic="health", within=12.0,
                            rises="observed.malformed"),
                     _none_published(f"no breaker or health change for {service}", "#", 8.0,
                                     {"service": service, "to": "open"},
                                     {"type": "service_degraded", "service": service},
                                     {"type": "service_unavailable", "service": service}))),
    )


def _scenario(name: str, description: str, length: float, *groups: tuple[Step, ...]) -> Scenario:
    steps = tuple(sorted((s for g in groups for s in g), key=lambda s: s.at))
    return Scenario(name=name, description=description, steps=steps, length=length)


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        _scenario(
            "default", "every fault once, in ~92 s: crash+restart, error spike, validation storm, slow "
            "responses, dependency failure, hung service, malformed traffic", 92.0,
            crash_and_restart("Inventory", at=6.0),
            error_spike("Payments", at=18.0),
            validation_storm("Inventory", at=32.0),
            slow_responses("UserManagement", at=32.0),
            crash_and_restart("UserManagement", at=50.0, dependents=("OrderManagement",)),
            hung_service("OrderManagement", at=64.0, lasting=11.0),
            malformed_traffic("Inventory", at=66.0),
        ),
        _scenario("none", "steady traffic, no faults", 60.0),
        _scenario("quick", "crash+restart of Inventory and an error spike on Payments, in ~40 s", 40.0,
                  crash_and_restart("Inventory", at=5.0), error_spike("Payments", at=8.0)),
        _scenario("crash", "crash and restart Inventory", 35.0, crash_and_restart("Inventory", at=5.0)),
        _scenario("errors", "internal-error spike on Payments", 35.0, error_spike("Payments", at=5.0)),
        _scenario("slow", "slow UserManagement", 30.0, slow_responses("UserManagement", at=5.0)),
        _scenario("hang", "hung OrderManagement", 40.0, hung_service("OrderManagement", at=5.0)),
        _scenario("dependency", "UserManagement crashes; OrderManagement depends on it", 35.0,
                  crash_and_restart("UserManagement", at=8.0, dependents=("OrderManagement",))),
        _scenario("validation", "validation-error storm on Inventory", 25.0, validation_storm("Inventory", at=5.0)),
        _scenario("malformed", "malformed traffic on service/Inventory", 25.0, malformed_traffic("Inventory", at=5.0)),
    )
}


# ------------------------------------------------------------------ running


class Platform(Protocol):
    """What the runner needs from the sample platform."""

    async def crash(self, service: str) -> None: ...
    async def restart(self, service: str) -> None: ...
    async def set_mode(self, service: str, mode: FaultMode) -> None: ...
    async def send_malformed(self, service: str) -> int: ...


@dataclass(frozen=True, slots=True)
class Injection:
    """When step ``index`` was carried out (epoch seconds) and at which offset from the start."""

    index: int
    at: float
    offset: float


async def run_scenario(
    scenario: Scenario,
    platform: Platform,
    *,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    on_step: Callable[[Step, Injection], None] | None = None,
    length: float | None = None,
) -> list[Injection]:
    """Carry out the steps at their offsets, then wait out ``length`` (default the scenario's)."""
    start = clock()
    total = scenario.length if length is None else length
    done: list[Injection] = []
    for i, step in enumerate(scenario.steps):
        if step.at > total:
            break  # a run cut short by --duration skips the later steps
        wait = start + step.at - clock()
        if wait > 0:
            await sleep(wait)
        a = step.action
        if a.kind == "crash":
            await platform.crash(a.service)
        elif a.kind == "restart":
            await platform.restart(a.service)
        elif a.kind == "mode":
            await platform.set_mode(a.service, a.mode or FaultMode())
        else:
            await platform.send_malformed(a.service)
        now = clock()
        inj = Injection(i, now, now - start)
        done.append(inj)
        if on_step is not None:
            on_step(step, inj)
    rest = start + total - clock()
    if rest > 0:
        await sleep(rest)
    return done


# ------------------------------------------------------------------ verdicts


@dataclass(frozen=True, slots=True)
class Observed:
    """A message sfa-ops published: arrival (epoch s), topic below ``system/{cluster}/``, payload."""

    at: float
    topic: str
    payload: Mapping[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class Verdict:
    label: str
    met: bool
    absent: bool = False
    first_at: float | None = None
    latency_s: float | None = None
    evidence: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class StepReport:
    action: str
    offset: float
    injected_at: float
    verdicts: tuple[Verdict, ...] = field(default_factory=tuple)


def _topic_matches(pattern: str, topic: str) -> bool:
    return pattern == "#" or topic == pattern


def _field_matches(actual: Any, wanted: Any) -> bool:
    if isinstance(actual, list) and not isinstance(wanted, list):
        return wanted in actual
    return bool(actual == wanted)


def matches(payload: Mapping[str, Any], alternative: Mapping[str, Any]) -> bool:
    """Whether ``payload`` has every field of ``alternative`` (lists: contains the value)."""
    return all(k in payload and _field_matches(payload[k], v) for k, v in alternative.items())


def _path(payload: Mapping[str, Any], dotted: str) -> float | None:
    cur: Any = payload
    for part in dotted.split("."):
        if not isinstance(cur, Mapping) or part not in cur:
            return None
        cur = cur[part]
    return float(cur) if isinstance(cur, int | float) and not isinstance(cur, bool) else None


def judge(expect: Expect, injected_at: float, observed: Sequence[Observed], end: float) -> Verdict:
    """One expectation against everything observed (in arrival order) up to ``end``."""
    deadline = min(injected_at + expect.within, end)
    window = [o for o in observed if injected_at <= o.at <= deadline and _topic_matches(expect.topic, o.topic)]
    hit: Observed | None = None
    if expect.rises is not None:
        before = [o for o in observed if o.at < injected_at and o.topic == expect.topic]
        base = (_path(before[-1].payload, expect.rises) if before else None) or 0.0
        hit = next((o for o in window if (_path(o.payload, expect.rises) or 0.0) > base), None)
    else:
        hit = next((o for o in window if any(matches(o.payload, alt) for alt in expect.match)), None)
    met = (hit is None) if expect.absent else (hit is not None)
    return Verdict(
        label=expect.label,
        met=met,
        absent=expect.absent,
        first_at=None if hit is None else hit.at,
        latency_s=None if hit is None else round(hit.at - injected_at, 3),
        evidence=None if hit is None else {"topic": hit.topic, **_brief(hit.payload)},
    )


def _brief(payload: Mapping[str, Any]) -> dict[str, Any]:
    keys = ("type", "service", "from", "to", "reason", "reasons", "originService", "affectedServices", "observed")
    return {k: payload[k] for k in keys if k in payload}


def evaluate(scenario: Scenario, injections: Sequence[Injection], observed: Sequence[Observed],
             *, end: float) -> list[StepReport]:
    """A report per injected step: its verdicts against what was observed until ``end``."""
    ordered = sorted(observed, key=lambda o: o.at)
    reports = []
    for inj in injections:
        step = scenario.steps[inj.index]
        verdicts = tuple(judge(e, inj.at, ordered, end) for e in step.expect)
        reports.append(StepReport(action=step.action.describe(), offset=round(inj.offset, 3),
                                  injected_at=inj.at, verdicts=verdicts))
    return reports
