"""Loading policy YAML: shipped defaults in ``policies/*.yaml``, optional override directory.

A key set in an override file replaces the default (mappings merge key by key, everything else
is replaced whole). Every file is validated by a pydantic model; a bad file raises
``PolicyConfigError`` naming the file, the key path, the bad value and what is allowed.

Value conventions shared by all policies: durations are ``300s``, ``5m``, ``2h``, ``1d``,
``250ms`` or a number of seconds (``Duration`` → float seconds); rates and thresholds are
percentages (``Percent``: ``50`` means 50 %, stored as 50.0).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, TypeVar

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

DEFAULTS_DIR = Path(__file__).resolve().parent.parent  # policies/: the YAML stays at the top

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0, None: 1.0}


class PolicyConfigError(ValueError):
    """A policy file is missing, unreadable or invalid; the message says where and how to fix it."""


def parse_duration(value: Any) -> float:
    """``"300s"``, ``"5m"``, ``"2h"``, ``"250ms"``, ``"1d"``, or a number of seconds → seconds."""
    if isinstance(value, bool):
        raise ValueError("a duration like '300s', '5m', '2h' or a number of seconds, not a boolean")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration must not be negative")
        return float(value)
    if isinstance(value, str):
        m = _DURATION.match(value)
        if m:
            return float(m.group(1)) * _UNITS[m.group(2)]
    raise ValueError(f"a duration like '300s', '5m', '2h', '250ms' or a number of seconds, got {value!r}")


def format_duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def _percent(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        if isinstance(value, str) and value.strip().endswith("%"):
            value = float(value.strip()[:-1])
        else:
            raise ValueError(f"a percentage between 0 and 100 (50 means 50%), got {value!r}")
    if not 0 <= value <= 100:
        raise ValueError(f"a percentage between 0 and 100 (50 means 50%), got {value!r}")
    return float(value)


Duration = Annotated[float, BeforeValidator(parse_duration)]
Percent = Annotated[float, BeforeValidator(_percent)]


class PolicyModel(BaseModel):
    """Base for policy config models: unknown keys are errors (typos must not pass silently)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class OpenPolicyModel(BaseModel):
    """For sections that mirror a foreign format (Alertmanager) where unknown keys are ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)


M = TypeVar("M", bound=BaseModel)


def merge(base: Any, override: Any) -> Any:
    """Mappings merge key by key (recursively); any other value in the override replaces."""
    if isinstance(base, dict) and isinstance(override, dict):
        out = dict(base)
        for k, v in override.items():
            out[k] = merge(base[k], v) if k in base else v
        return out
    return override


def read_text(path: Path) -> str:
    """A policy file's text; unreadable or not UTF-8 is PolicyConfigError."""
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyConfigError(f"{path}: cannot read ({exc.strerror})") from exc
    except UnicodeDecodeError as exc:
        raise PolicyConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from exc


def parse_yaml(text: str, source: str) -> Any:
    """YAML text → data; any failure (syntax, a value that cannot be built such as 2001-02-30,
    nesting too deep) is PolicyConfigError naming ``source``."""
    try:
        return yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1} column {mark.column + 1}" if mark else ""
        raise PolicyConfigError(f"{source}:{where} not valid YAML: {getattr(exc, 'problem', None) or exc}") from exc
    except (ValueError, TypeError, OverflowError) as exc:
        raise PolicyConfigError(f"{source}: a YAML value cannot be read: {exc}") from exc
    except RecursionError as exc:
        raise PolicyConfigError(f"{source}: YAML nested too deep") from exc


def read_yaml(path: Path) -> Any:
    return parse_yaml(read_text(path), str(path))


def format_validation_error(source: str, exc: ValidationError) -> str:
    lines = [f"{source}: invalid policy"]
    for err in exc.errors():
        path = ".".join(str(p) for p in err["loc"]) or "(top level)"
        bad = err.get("input")
        bad_repr = repr(bad)
        if len(bad_repr) > 80:
            bad_repr = bad_repr[:77] + "..."
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; see the default file for the allowed keys)"
            lines.append(f"  {path}: {msg}")
        else:
            lines.append(f"  {path} = {bad_repr}: {msg}")
    return "\n".join(lines)


def validate(model: type[M], data: Any, source: str) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise PolicyConfigError(format_validation_error(source, exc)) from exc


def load_policy(
    model: type[M],
    filename: str,
    overrides_dir: Path | str | None = None,
    *,
    defaults_dir: Path | None = None,
) -> M:
    """Load ``filename`` from the defaults, merge the same-named file of ``overrides_dir`` over it,
    and validate. Errors name the file that holds the bad key when it can be told."""
    default_path = (defaults_dir or DEFAULTS_DIR) / filename
    data = read_yaml(default_path) if default_path.exists() else {}
    source = str(default_path)
    if overrides_dir is not None:
        odir = Path(overrides_dir)
        if not odir.is_dir():
            raise PolicyConfigError(f"{odir}: policies override directory does not exist")
        override_path = odir / filename
        if override_path.exists():
            over = read_yaml(override_path)
            if not isinstance(over, dict):
                raise PolicyConfigError(f"{override_path}: the top level must be a mapping of keys")
            data = merge(data, over)
            source = f"{override_path} (merged over {default_path.name})"
    return validate(model, data, source)


def load_policy_text(model: type[M], text: str, source: str = "<string>") -> M:
    """Validate a YAML string (tests build policies from strings, as Alertmanager's do)."""
    return validate(model, parse_yaml(text, source), source)


__all__ = [
    "DEFAULTS_DIR",
    "Duration",
    "Field",
    "OpenPolicyModel",
    "Percent",
    "PolicyConfigError",
    "PolicyModel",
    "format_duration",
    "load_policy",
    "load_policy_text",
    "merge",
    "parse_duration",
    "parse_yaml",
    "read_text",
]
