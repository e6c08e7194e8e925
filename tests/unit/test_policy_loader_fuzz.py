"""Every policy loader under hostile override files: arbitrary bytes, arbitrary YAML, and the shipped
default with one value anywhere replaced by an arbitrary one. Each load either returns the policy or
raises ``PolicyConfigError`` (the documented error, naming the file) — never anything else."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policies.alerting.config import load_alerting_policy
from policies.alerting.runbooks import load_runbooks
from policies.analysis.recommendation_settings import load_recommendation_policy
from policies.breaker.cascade import load_dependency_policy
from policies.breaker.settings import load_breaker_policy
from policies.common.config import DEFAULTS_DIR, PolicyConfigError, load_policy_text
from policies.compliance.classification import load_compliance_policy
from policies.health.status import load_health_policy
from policies.infrastructure.checks import load_infrastructure_policy
from policies.observation.config import load_observation_policy
from policies.response.config import load_response_policy
from policies.security.analyzer import SecurityAnalyzer
from policies.security.detection_rules import SecurityPolicy, load_security_policy

LOADERS: dict[str, Callable[[Path], Any]] = {
    "alerting.yaml": load_alerting_policy, "circuit_breaker.yaml": load_breaker_policy,
    "compliance.yaml": load_compliance_policy, "dependencies.yaml": load_dependency_policy,
    "health.yaml": load_health_policy, "infrastructure.yaml": load_infrastructure_policy,
    "observation.yaml": load_observation_policy, "recommendations.yaml": load_recommendation_policy,
    "response.yaml": load_response_policy, "runbooks.yaml": load_runbooks, "security.yaml": load_security_policy,
}

scalars = (st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
           | st.sampled_from(["5m", "-1s", "1e400", "250ms", "50%", "101%", "0", "[", "*", "a[", "10.0.0.0/33",
                              "::1", "2001-02-30", "nan", "emergency", "x" * 300]))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.text(max_size=8) | st.integers(), inner, max_size=3), max_leaves=8)
yaml_texts = st.sampled_from([
    "a: 2001-02-30\n", "{", "- [", "a: !!python/object:os.system x\n", "&a [*a]\n", "? [1]\n: 2\n",
    "a: *nope\n", "\t- x\n", "key: \"\\uD800\"\n", "[" * 200, "a:\n  b:\n    - 1\n  - 2\n", "!!binary x\n",
    "a: !!timestamp 2001-13-01\n", "a: !!float abc\n", "a: !!int x\n", "a: !!set {1, 2}\n",
]) | st.text(max_size=80)


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, (*prefix, i))
    return out


def _replace(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(doc, dict):
        return {**doc, head: _replace(doc[head], rest, value)}
    copy = list(doc)
    copy[head] = _replace(doc[head], rest, value)
    return copy


DEFAULTS = {name: yaml.safe_load((DEFAULTS_DIR / name).read_text()) or {} for name in LOADERS}
PATHS = {name: _paths(doc) for name, doc in DEFAULTS.items()}


def _load(name: str, content: bytes) -> None:
    """Load ``name`` with an override of ``content``: the policy or PolicyConfigError, nothing else;
    a security policy that loads also builds its analyzer (which parses the allowlist)."""
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / name).write_bytes(content)
        try:
            policy = LOADERS[name](Path(tmp))
        except PolicyConfigError as exc:
            refused = str(exc)
        else:
            refused = None
        if refused is not None:
            assert name in refused or "<" in refused
            return
        if isinstance(policy, SecurityPolicy):
            SecurityAnalyzer(config=policy)


def _dump(value: Any) -> bytes:
    return yaml.safe_dump(value, allow_unicode=True).encode("utf-8", "surrogatepass")


fuzz = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
names = st.sampled_from(sorted(LOADERS))


@pytest.mark.slow
@fuzz
@given(name=names, content=st.binary(max_size=80) | yaml_texts.map(lambda t: t.encode("utf-8", "surrogatepass"))
       | values.map(_dump))
def test_arbitrary_override_files(name: str, content: bytes) -> None:
    """Arbitrary bytes (invalid UTF-8 included), broken YAML and arbitrary YAML documents."""
    _load(name, content)


@pytest.mark.slow
@fuzz
@given(name=names, data=st.data())
def test_default_with_one_value_replaced(name: str, data: st.DataObject) -> None:
    """The shipped default with any one value (or key's subtree) replaced by an arbitrary value."""
    path = data.draw(st.sampled_from(PATHS[name]))
    value = data.draw(values)
    _load(name, _dump(_replace(DEFAULTS[name], path, value)))


@pytest.mark.parametrize("text", ["a: 2001-02-30\n", "a: !!timestamp 2001-13-01\n", "[" * 2000])
def test_yaml_that_fails_while_constructing_is_a_config_error(text: str) -> None:
    """YAML that parses but whose values cannot be built (an impossible date) or that nests too
    deep is reported as PolicyConfigError by both readers (they raised ValueError/RecursionError)."""
    with pytest.raises(PolicyConfigError):
        load_policy_text(SecurityPolicy, text)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "security.yaml").write_text(text)
        with pytest.raises(PolicyConfigError):
            load_security_policy(tmp)


def test_override_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    """An override file that is not UTF-8 text is PolicyConfigError (it raised UnicodeDecodeError)."""
    (tmp_path / "security.yaml").write_bytes(b"a: \xff\xfe\n")
    with pytest.raises(PolicyConfigError, match=r"security\.yaml"):
        load_security_policy(tmp_path)
    (tmp_path / "alerting.yaml").write_bytes(b"route: \xff\n")
    with pytest.raises(PolicyConfigError, match=r"alerting\.yaml"):
        load_alerting_policy(tmp_path)
