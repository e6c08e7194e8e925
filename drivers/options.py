"""Options for the drivers, from the command line, ``SFA_OPS_<OPTION>`` env vars and a YAML file.

Precedence: command line > environment > ``--config`` file > defaults. Every option is declared
once (:class:`Option`); a bad value stops the driver with exit status 2 and a message naming the
option, where it came from, and how to fix it.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import yaml

from adapters.runtime.logs import configure as configure_logging
from adapters.runtime.logs import log_format, log_level
from policies.common.config import parse_duration

ENV_PREFIX = "SFA_OPS_"


class OptionError(ValueError):
    """A bad option value; the message names the option and the fix."""


@dataclass(frozen=True)
class Option:
    name: str  # dashed, as on the command line: "cluster-id"
    help: str
    default: Any = None
    convert: Callable[[str], Any] = str
    repeatable: bool = False
    metavar: str | None = None
    flag: bool = False

    @property
    def key(self) -> str:
        return self.name.replace("-", "_")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.key.upper()


def positive_int(value: str) -> int:
    n = int(value)
    if n < 1:
        raise ValueError("must be a positive integer")
    return n


def listen_address(value: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[v6]:PORT`` or ``PORT`` (loopback) as (host, port); port 0 picks a free one."""
    host, sep, port = value.rpartition(":")
    if not sep:
        host, port = "127.0.0.1", value
    host = host.strip("[]") or "127.0.0.1"
    number = int(port)
    if not 0 <= number <= 65535:
        raise ValueError("port must be 0..65535")
    return host, number


def non_negative_int(value: str) -> int:
    n = int(value)
    if n < 0:
        raise ValueError("must be 0 or a positive integer")
    return n


def seconds(value: str) -> float:
    return parse_duration(value)


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    s = str(value).strip().lower()
    if s in ("1", "true", "yes", "on"):
        return True
    if s in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("must be true or false")


def build_parser(prog: str, description: str, options: Sequence[Option], epilog: str = "") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description,
        epilog=epilog + f"\nEvery option can also be set as an environment variable {ENV_PREFIX}<OPTION> "
        "(e.g. SFA_OPS_CLUSTER_ID) or as a key in the --config YAML file (e.g. cluster_id: prod).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", metavar="FILE", help="YAML file with option values (keys as below, '-' or '_')")
    add_options(parser, options)
    return parser


def add_options(parser: argparse.ArgumentParser, options: Sequence[Option]) -> None:
    """Declare ``options`` on ``parser`` (a driver with its own parser: see :func:`from_args`)."""
    for opt in options:
        default_txt = "" if opt.default in (None, [], False) else f" (default: {opt.default})"
        if opt.flag:
            parser.add_argument(f"--{opt.name}", dest=opt.key, action="store_true", default=None,
                                help=opt.help + default_txt)
        else:
            parser.add_argument(f"--{opt.name}", dest=opt.key, metavar=opt.metavar,
                                action="append" if opt.repeatable else "store", default=None,
                                help=opt.help + default_txt + (" (repeatable)" if opt.repeatable else ""))


def _convert(opt: Option, raw: Any, source: str) -> Any:
    try:
        if opt.flag:
            return _to_bool(raw)
        if opt.repeatable:
            items = raw if isinstance(raw, list) else [s for s in str(raw).split(",") if s]
            return [opt.convert(str(v)) for v in items]
        if raw is None:
            return None
        return opt.convert(raw if isinstance(raw, str) else str(raw))
    except (ValueError, TypeError) as exc:
        raise OptionError(f"--{opt.name} (from {source}) = {raw!r}: {exc}; see --help for what it takes") from exc


def resolve(
    options: Sequence[Option], argv: Sequence[str] | None, *, prog: str, description: str, epilog: str = "",
    env: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Parse ``argv`` and merge env and ``--config``; raises ``OptionError`` on a bad value."""
    parser = build_parser(prog, description, options, epilog)
    args = parser.parse_args(argv)
    env_map: Mapping[str, str] = os.environ if env is None else env
    file_values: dict[str, Any] = {}
    config_path = args.config or env_map.get(ENV_PREFIX + "CONFIG")
    if config_path:
        path = Path(config_path)
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except OSError as exc:
            raise OptionError(f"--config {path}: cannot read ({exc.strerror}); give an existing YAML file") from exc
        except yaml.YAMLError as exc:
            raise OptionError(f"--config {path}: not valid YAML ({exc})") from exc
        if not isinstance(loaded, dict):
            raise OptionError(f"--config {path}: the top level must be a mapping of option: value")
        known = {o.key for o in options}
        for k, v in loaded.items():
            key = str(k).replace("-", "_")
            if key not in known:
                raise OptionError(
                    f"--config {path}: unknown option {k!r}; known: {', '.join(sorted(known))}")
            file_values[key] = v
    return _merge(options, args, env_map, file_values, f"config file {config_path}")


def from_args(options: Sequence[Option], args: argparse.Namespace, env: Mapping[str, str] | None = None,
              ) -> dict[str, Any]:
    """``options`` declared with :func:`add_options` on a driver's own parser: command line >
    environment > default; raises ``OptionError`` on a bad value."""
    return _merge(options, args, os.environ if env is None else env, {}, "")


def _merge(options: Sequence[Option], args: argparse.Namespace, env_map: Mapping[str, str],
           file_values: Mapping[str, Any], file_source: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for opt in options:
        cli = getattr(args, opt.key)
        if cli is not None:
            out[opt.key] = _convert(opt, cli, "command line")
        elif opt.env in env_map:
            out[opt.key] = _convert(opt, env_map[opt.env], f"environment {opt.env}")
        elif opt.key in file_values:
            out[opt.key] = _convert(opt, file_values[opt.key], file_source)
        else:
            out[opt.key] = list(opt.default) if isinstance(opt.default, list) else opt.default
    return out


# --log-level and --log-format of every driver that logs: one declaration, one configuration
# (adapters.runtime.logs, Ray's LoggingConfig), so a driver's records and its Ray workers' look alike.
LOG_OPTIONS = (
    Option("log-level", "debug, info, warning, error or critical: for this command and its Ray workers",
           default="WARNING", convert=log_level, metavar="LEVEL"),
    Option("log-format", "text or json (one object per line, Ray's encoding; Ray workers' records carry "
           "the job, node and actor ids)", default="text", convert=log_format, metavar="FORMAT"),
)


def configure_logs(opts: Mapping[str, Any]) -> None:
    """This process's logging from the resolved LOG_OPTIONS."""
    configure_logging(opts["log_level"], opts["log_format"])


def fail(prog: str, message: str) -> NoReturn:
    print(f"{prog}: error: {message}", file=sys.stderr)
    raise SystemExit(2)
