"""``sfa-ops SUBCOMMAND [OPTIONS]`` — every sfa-ops command behind one executable (the project's
console script). Each subcommand is a driver's ``main(argv)``, the same as ``python -m drivers.X``;
``sfa-ops SUBCOMMAND --help`` lists its options. The drivers are imported only when run, so
``--help`` and ``--version`` answer at once (no Ray import).
"""

from __future__ import annotations

import difflib
import importlib
import sys
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata

DIST = "sfa-ops"


@dataclass(frozen=True)
class Command:
    module: str
    summary: str
    logs: bool = True  # takes --log-level and --log-format


COMMANDS: dict[str, Command] = {
    "operate": Command("drivers.operate", "the daemon: observers, service monitors, alerts and security (a Ray job)"),
    "status": Command("drivers.status", "every service and component's state, from the retained health message"),
    "simulate": Command("drivers.simulate", "the sample platform under traffic, with scripted faults"),
    "run": Command("drivers.main_job", "what `make run` does: broker, operate and a simulated platform, live"),
    "baselines": Command("drivers.baselines", "learn per-user and per-service baselines from the audit log"),
    "recommend": Command("drivers.recommend", "performance recommendations over a recent window"),
    "report": Command("drivers.report", "GDPR and security reports (gdpr|security --from DATE --to DATE)"),
    "incidents": Command("drivers.incidents", "list, show, resolve incidents; lift, approve, reject actions"),
    "audit": Command("drivers.audit", "verify the audit trail's hash chains; purge past retention"),
    "broker-acl": Command("drivers.broker_acl", "the broker's principals, credentials and ACLs (mosquitto|emqx)",
                          logs=False),
    "generate": Command("drivers.generate", "write a seeded, realistic platform history into a store",
                        logs=False),
}

# What the drivers return, one meaning per code across every subcommand.
EXIT_CODES = (
    (0, "done (operate and status --watch: stopped by SIGINT/SIGTERM or --duration)"),
    (1, "ran, and the answer is no: audit chain broken, incident or action not found, no health "
        "message within --timeout, the run could not start; or an unexpected error (traceback)"),
    (2, "bad usage or configuration: unknown subcommand or option, bad value, unreadable file, "
        "broker or store unreachable"),
    (130, "interrupted (Ctrl-C) before done"),
)


def version() -> str:
    """The installed distribution's version (``pyproject.toml``, through the package metadata)."""
    try:
        return metadata.version(DIST)
    except metadata.PackageNotFoundError:
        return "unknown (not installed: run `make setup`)"


def help_text() -> str:
    width = max(len(n) for n in COMMANDS)
    lines = [
        "usage: sfa-ops [--version] [--help] SUBCOMMAND [OPTIONS]",
        "",
        "The sfa-ops commands. `sfa-ops SUBCOMMAND --help` lists a subcommand's options; each is also",
        "`python -m drivers.MODULE` from a checkout.",
        "",
        "subcommands:",
        *(f"  {name:<{width}}  {c.summary}" for name, c in COMMANDS.items()),
        "",
        "options:",
        "  --version  print the version and exit",
        "  --help     print this help and exit",
        "",
        *textwrap.wrap(f"Every subcommand but {' and '.join(n for n, c in COMMANDS.items() if not c.logs)} takes "
                       "--log-level debug|info|warning|error|critical and --log-format text|json (env "
                       "SFA_OPS_LOG_LEVEL, SFA_OPS_LOG_FORMAT).", 100),
        "",
        "exit status:",
        *(textwrap.fill(meaning, 100, initial_indent=f"  {code:<3}  ", subsequent_indent=" " * 7)
          for code, meaning in EXIT_CODES),
    ]
    return "\n".join(lines) + "\n"


def _usage_error(message: str) -> int:
    sys.stderr.write(f"usage: sfa-ops [--version] [--help] SUBCOMMAND [OPTIONS]\nsfa-ops: error: {message}\n")
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        return _usage_error(f"name a subcommand: {', '.join(COMMANDS)} (sfa-ops --help says what each does)")
    first, rest = args[0], args[1:]
    if first in ("-h", "--help", "help"):
        sys.stdout.write(help_text())
        return 0
    if first in ("-V", "--version"):
        print(f"sfa-ops {version()}")
        return 0
    command = COMMANDS.get(first)
    if command is None:
        what = "option" if first.startswith("-") else "subcommand"
        close = difflib.get_close_matches(first, COMMANDS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return _usage_error(f"unknown {what} {first!r}{hint} (one of: {', '.join(COMMANDS)})")
    module = importlib.import_module(command.module)
    # Each driver names itself by its module-level PROG in its usage and error messages: run
    # from here, it is named as the user typed it.
    setattr(module, "PROG", f"sfa-ops {first}")  # noqa: B010
    try:
        return int(module.main(rest) or 0)
    except KeyboardInterrupt:
        sys.stderr.write(f"sfa-ops {first}: interrupted\n")
        return 130


if __name__ == "__main__":
    sys.exit(main())
