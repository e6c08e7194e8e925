#!/usr/bin/env python3
"""Move the flat ``policies/`` and ``adapters/`` modules into sub-packages by concern, and rewrite
every reference to them in the repository. Standard library only; run from anywhere inside the
repository (it works on the git work tree that contains this file):

    python3 scripts/restructure.py                  # move, rewrite, sort the touched imports
    python3 scripts/restructure.py --dry-run        # print the plan, change nothing
    python3 scripts/restructure.py --allow-unmapped # leave files no rule knows where they are

Deterministic and idempotent: the plan depends only on the files present, and a second run finds
nothing to move and nothing to rewrite. What it does, in order:

1. plan: every ``policies/*.py`` and ``adapters/*.py`` (and the ``adapters/infra/`` and
   ``adapters/status_page/`` directories) gets its place from ``MOVES``, else from
   ``PREFIX_RULES`` (new modules named ``policies/alert_….py`` etc.); a file matching nothing stops
   the run with the list (exit 1) unless ``--allow-unmapped``;
2. ``git mv`` each file, and write each package's ``__init__.py`` (a docstring saying what belongs
   there) where there is none;
3. rewrite references in every tracked text file: dotted names (imports, ``mock.patch`` targets,
   ``importlib`` strings, ``python -m``, docs), ``from policies import x`` forms, and file paths
   (``policies/x.py``, ``adapters/infra/``) in docs, configs and tests;
4. ``ruff check --select I --fix`` on the Python files it changed (import order moves with the new
   names), when ``.venv/bin/ruff`` or ``ruff`` is there.

The policy YAML files stay where users find them, ``policies/*.yaml`` (the shipped defaults that
``--policies DIR`` overrides file by file); only the loader moves (``policies/common/config.py``,
whose ``DEFAULTS_DIR`` is adjusted to still point at ``policies/``).
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

# --- the mapping table: old file → new file (relative to the repository root) ----------------------
# Read it as the package map: each block is one sub-package.
MOVES: dict[str, str] = {
    # policies/common: what every policy shares — the YAML loader and the value conventions.
    "policies/config.py": "policies/common/config.py",
    # policies/alerting: Alertmanager's model — config, matchers, routing, dispatcher, payloads.
    "policies/alerting.py": "policies/alerting/policy.py",
    "policies/alert_config.py": "policies/alerting/config.py",
    "policies/alert_enrichment.py": "policies/alerting/enrichment.py",
    "policies/alert_forwarding.py": "policies/alerting/forwarding.py",
    "policies/alert_groups.py": "policies/alerting/groups.py",
    "policies/alert_matchers.py": "policies/alerting/matchers.py",
    "policies/alert_model.py": "policies/alerting/model.py",
    "policies/alert_nflog.py": "policies/alerting/nflog.py",
    "policies/alert_notification.py": "policies/alerting/notification.py",
    "policies/alert_payloads.py": "policies/alerting/payloads.py",
    "policies/alert_receivers.py": "policies/alerting/receivers.py",
    "policies/alert_routing.py": "policies/alerting/routing.py",
    "policies/alert_rules.py": "policies/alerting/rules.py",
    "policies/time_intervals.py": "policies/alerting/time_intervals.py",
    "policies/runbooks.py": "policies/alerting/runbooks.py",
    # policies/analysis: history → baselines, summaries and recommendations (the batch jobs).
    "policies/baselines.py": "policies/analysis/baselines.py",
    "policies/recommendations.py": "policies/analysis/recommendations.py",
    "policies/rollup_summary.py": "policies/analysis/rollup_summary.py",
    # policies/audit: the audit log's events, schema, sanitizer and anchors.
    "policies/audit_anchors.py": "policies/audit/anchors.py",
    "policies/audit_events.py": "policies/audit/events.py",
    "policies/audit_schema.py": "policies/audit/schema.py",
    "policies/redaction.py": "policies/audit/redaction.py",
    "policies/secret_shapes.py": "policies/audit/secret_shapes.py",
    # policies/breaker: the circuit breaker, its outcome windows, cascade prevention.
    "policies/circuit_breaker.py": "policies/breaker/circuit.py",
    "policies/cascade.py": "policies/breaker/cascade.py",
    "policies/windows.py": "policies/breaker/windows.py",
    "policies/latency_sketch.py": "policies/breaker/latency_sketch.py",
    # policies/compliance: classification of calls and data accesses, GDPR data-subject requests.
    "policies/compliance.py": "policies/compliance/classification.py",
    "policies/data_subject.py": "policies/compliance/data_subject.py",
    # policies/health: a service's health, its monitor, and the loss of its last instance.
    "policies/health.py": "policies/health/status.py",
    "policies/monitoring.py": "policies/health/monitor.py",
    "policies/outage.py": "policies/health/outage.py",
    # policies/infrastructure: tier-3 checks of the platform's infrastructure and their alerts.
    "policies/infrastructure.py": "policies/infrastructure/checks.py",
    "policies/infra_alerts.py": "policies/infrastructure/alerts.py",
    "policies/kubernetes_state.py": "policies/infrastructure/kubernetes_state.py",
    # policies/metrics: series, rollups and the rules evaluated on sfa-ops' own metrics.
    "policies/call_metrics.py": "policies/metrics/calls.py",
    "policies/metric_rules.py": "policies/metrics/rules.py",
    "policies/metric_rules_eval.py": "policies/metrics/rules_eval.py",
    "policies/metric_series.py": "policies/metrics/series.py",
    "policies/ops_series.py": "policies/metrics/ops_series.py",
    "policies/rollups.py": "policies/metrics/rollups.py",
    "policies/sketch_codec.py": "policies/metrics/sketch_codec.py",
    # policies/observation: the observers' per-message work — intake, correlation, load sharing.
    "policies/observation.py": "policies/observation/config.py",
    "policies/correlation.py": "policies/observation/correlation.py",
    "policies/intake.py": "policies/observation/intake.py",
    "policies/sharing.py": "policies/observation/sharing.py",
    # policies/response: incident response — plans, guards, effects, escalation, expiry.
    "policies/response.py": "policies/response/plan.py",
    "policies/response_config.py": "policies/response/config.py",
    "policies/response_effects.py": "policies/response/effects.py",
    "policies/response_guard.py": "policies/response/guard.py",
    "policies/evidence.py": "policies/response/evidence.py",
    "policies/incident_expiry.py": "policies/response/incident_expiry.py",
    "policies/monitoring_watch.py": "policies/response/monitoring_watch.py",
    # policies/security: detection rules and their state, alerts, replay; the broker's ACL policy.
    "policies/security.py": "policies/security/analyzer.py",
    "policies/security_alerts.py": "policies/security/alerts.py",
    "policies/security_events.py": "policies/security/events.py",
    "policies/security_replay.py": "policies/security/replay.py",
    "policies/detection_rules.py": "policies/security/detection_rules.py",
    "policies/entity_state.py": "policies/security/entity_state.py",
    "policies/login_patterns.py": "policies/security/login_patterns.py",
    "policies/broker_acl.py": "policies/security/broker_acl.py",
    "policies/broker_acl_render.py": "policies/security/broker_acl_render.py",
    # policies/supervision: the supervisor's decisions — discovery, status views, the ops board.
    "policies/supervision.py": "policies/supervision/core.py",
    "policies/discovery.py": "policies/supervision/discovery.py",
    "policies/status_view.py": "policies/supervision/status_view.py",
    "policies/ops_board.py": "policies/supervision/ops_board.py",
    # adapters/mqtt: the one MQTT bus and what rides on it (topics, outbox, signing, traces).
    "adapters/mqtt.py": "adapters/mqtt/bus.py",
    "adapters/mqtt_client.py": "adapters/mqtt/client.py",
    "adapters/mqtt_config.py": "adapters/mqtt/config.py",
    "adapters/mqtt_topics.py": "adapters/mqtt/topics.py",
    "adapters/outbox.py": "adapters/mqtt/outbox.py",
    "adapters/signing.py": "adapters/mqtt/signing.py",
    "adapters/tracing.py": "adapters/mqtt/tracing.py",
    # adapters/http: the one HTTP client (one error tree) and operate's status endpoint.
    "adapters/http_client.py": "adapters/http/client.py",
    "adapters/status_http.py": "adapters/http/status_server.py",
    # adapters/store: persistence (already a package) and the audit anchor file.
    "adapters/audit_anchor_file.py": "adapters/store/audit_anchor_file.py",
    # adapters/notify: delivering notifications to receivers (the DELIVERERS registry).
    "adapters/alert_delivery.py": "adapters/notify/delivery.py",
    # adapters/enforcement: carrying out enforcement actions (Redis keys, EMQX bans).
    "adapters/enforcement.py": "adapters/enforcement/actions.py",
    # adapters/runtime: sfa-ops' own processes, logs, Ray metrics export, how URLs are shown.
    "adapters/logs.py": "adapters/runtime/logs.py",
    "adapters/processes.py": "adapters/runtime/processes.py",
    "adapters/ray_metrics.py": "adapters/runtime/ray_metrics.py",
    "adapters/urls.py": "adapters/runtime/urls.py",
    # adapters/reports: report files (Markdown, HTML, JSON).
    "adapters/reports.py": "adapters/reports/render.py",
    # adapters/testing: the test doubles (FakeClock lives in actors.clock).
    "adapters/testing.py": "adapters/testing/doubles.py",
}

# Whole directories: old → new (every file inside keeps its name).
DIR_MOVES: dict[str, str] = {
    "adapters/infra": "adapters/probes",  # the infrastructure probes and their PROBES registry
    "adapters/status_page": "adapters/http/status_page",  # static files served by status_server
}

# Files that stay where they are (the top-level packages' own __init__).
STAYS = {"policies/__init__.py", "adapters/__init__.py"}

# Modules other helpers add under the prescribed names: (old prefix, new directory, strip prefix?).
# The first matching rule wins; ``policies/alert_x.py`` → ``policies/alerting/x.py``.
PREFIX_RULES: list[tuple[str, str, bool]] = [
    ("policies/alert_", "policies/alerting", True),
    ("policies/alerting_", "policies/alerting", True),
    ("policies/response_", "policies/response", True),
    ("policies/incident_", "policies/response", False),
    ("policies/security_", "policies/security", True),
    ("policies/detection_", "policies/security", False),
    ("policies/breaker_", "policies/breaker", True),
    ("policies/circuit_", "policies/breaker", False),
    ("policies/health_", "policies/health", True),
    ("policies/monitoring_", "policies/health", False),
    ("policies/outage_", "policies/health", False),
    ("policies/supervision_", "policies/supervision", True),
    ("policies/supervisor_", "policies/supervision", True),
    ("policies/observation_", "policies/observation", True),
    ("policies/observer_", "policies/observation", True),
    ("policies/audit_", "policies/audit", True),
    ("policies/compliance_", "policies/compliance", True),
    ("policies/infra_", "policies/infrastructure", True),
    ("policies/infrastructure_", "policies/infrastructure", True),
    ("policies/metric_", "policies/metrics", True),
    ("policies/metrics_", "policies/metrics", True),
    ("policies/analysis_", "policies/analysis", True),
    ("adapters/mqtt_", "adapters/mqtt", True),
    ("adapters/http_", "adapters/http", True),
    ("adapters/notify_", "adapters/notify", True),
    ("adapters/enforcement_", "adapters/enforcement", True),
    ("adapters/probe_", "adapters/probes", True),
]

PACKAGES: dict[str, str] = {
    "policies/common": "What every policy shares: loading policy YAML (shipped defaults in ``policies/*.yaml``,\n"
                       "an override directory) and the value conventions (durations, percentages).",
    "policies/alerting": "Alert routing with Alertmanager's semantics: the policy file, matchers, time intervals,\n"
                         "the routing tree, the dispatcher and notification log, enrichment, forwarding, payloads.",
    "policies/analysis": "The batch analyses over stored history: baselines, summaries, recommendations.",
    "policies/audit": "The audit log: event schema, the events built from calls and accesses, the sanitizer\n"
                      "(redaction, secret shapes) and the anchors that pin the hash chains.",
    "policies/breaker": "Circuit breakers: the per-service state machine, its sliding outcome windows, and\n"
                        "cascading-failure prevention over the dependency graph.",
    "policies/compliance": "Compliance: how calls and data accesses are classified, which accesses violate the\n"
                           "rules, and GDPR data-subject requests.",
    "policies/health": "Service health: classification with flap damping, one service's monitor (breaker +\n"
                       "health over the observers' deltas), and the loss of a service's last instance.",
    "policies/infrastructure": "Infrastructure (tier 3): check results, per-component hysteresis, the wire messages\n"
                               "and alerts of the checkers, and Kubernetes workload state.",
    "policies/metrics": "sfa-ops' own metric series: call counts and histograms, rollups, latency sketches,\n"
                        "and the alerting rules evaluated on the series.",
    "policies/observation": "The observers' per-message work: the observation policy, intake of calls,\n"
                            "call/response correlation and sharing the load between observers.",
    "policies/response": "Incident response: from a security alert to a plan (escalation, guards on\n"
                         "enforcement), the effects of each action, evidence, incident expiry.",
    "policies/security": "Security detection: the detection rules over bounded per-entity state, their alerts,\n"
                         "replay over history, and who may publish and subscribe what on the broker.",
    "policies/supervision": "The supervisor's decisions: which services get a monitor, and what the status page,\n"
                            "``/status.json`` and the ops board show.",
    "adapters/mqtt": "The MQTT bus (one aiomqtt connection per process) and what rides on it: client and\n"
                     "config, topic validation, the outbox, message signing, W3C trace context.",
    "adapters/http": "HTTP: the one JSON client with its error tree (management APIs, webhooks, receivers) and\n"
                     "operate's status endpoint with its static page.",
    "adapters/notify": "Delivering alert notifications: one function per receiver type, registered in\n"
                       "``DELIVERERS``.",
    "adapters/enforcement": "Carrying out enforcement actions outside sfa-ops (Redis keys with TTL, EMQX bans).",
    "adapters/runtime": "The processes sfa-ops runs itself (embedded mosquitto, test servers), log output,\n"
                        "Ray metrics export, and the one way a URL or DSN is shown to a person.",
    "adapters/reports": "Report files: one document model rendered as Markdown, HTML and JSON.",
    "adapters/testing": "Test doubles for the adapters (an in-memory store, a capturing bus), so an actor body\n"
                        "runs in a unit test without Ray, a broker or a database.",
    "adapters/probes": "Infrastructure probes: one bounded check of one component each, found through the\n"
                       "``PROBES`` registry.",
    "adapters/store": "Persistence: ``open_store(url)`` gives the SQLite or PostgreSQL ``Store``.",
}

# Content fixes a move needs beyond renaming (file after the move, old text, new text).
CONTENT_FIXES: list[tuple[str, str, str]] = [
    ("policies/common/config.py",
     "DEFAULTS_DIR = Path(__file__).resolve().parent\n",
     "DEFAULTS_DIR = Path(__file__).resolve().parent.parent  # policies/: the YAML stays at the top\n"),
]
# Path segments written as ``Path / "a" / "b"`` (applied to every rewritten file).
SEGMENT_FIXES: list[tuple[str, str]] = [('"adapters" / "infra"', '"adapters" / "probes"')]

ROOTS = ("policies", "adapters")
TEXT_SUFFIXES = {".py", ".md", ".toml", ".yaml", ".yml", ".cfg", ".ini", ".txt", ".sh", ".json", ".rst", ""}
SKIP_FILES = {"scripts/restructure.py", "uv.lock"}


def run_git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, text=True).stdout


def module_of(path: str) -> str:
    """``policies/alerting/model.py`` → ``policies.alerting.model``; a package's ``__init__.py`` → the package."""
    parts = path.removesuffix(".py").split("/")
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@dataclass
class Plan:
    moves: list[tuple[str, str]] = field(default_factory=list)  # files to git mv now
    dir_moves: list[tuple[str, str]] = field(default_factory=list)  # directories to git mv whole
    unmapped: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    modules: dict[str, str] = field(default_factory=dict)  # old module → new module (for rewriting)
    paths: dict[str, str] = field(default_factory=dict)  # old path → new path (files and directories)


def _prefix_target(rel: str) -> str | None:
    name = rel.rsplit("/", 1)[-1]
    for prefix, target, strip in PREFIX_RULES:
        if rel.startswith(prefix) and rel.count("/") == 1:
            rest = rel[len(prefix):] if strip else name
            return f"{target}/{rest}"
    return None


def plan(root: Path) -> Plan:
    p = Plan()
    known_dirs = set(PACKAGES) | set(DIR_MOVES.values()) | {"adapters/__pycache__", "policies/__pycache__"}
    for top in ROOTS:
        for entry in sorted((root / top).iterdir()):
            rel = f"{top}/{entry.name}"
            if entry.is_dir():
                if rel in DIR_MOVES:
                    p.dir_moves.append((rel, DIR_MOVES[rel]))
                elif rel not in known_dirs:
                    p.unmapped.append(rel + "/")
                continue
            if rel in STAYS or (top == "policies" and entry.suffix in (".yaml", ".yml")):
                continue
            if entry.suffix != ".py":
                p.unmapped.append(rel)
                continue
            target = MOVES.get(rel) or _prefix_target(rel)
            if target is None:
                p.unmapped.append(rel)
            elif (root / target).exists():
                p.problems.append(f"{rel} → {target}: the target exists already")
            else:
                p.moves.append((rel, target))
    targets = [t for _, t in p.moves]
    for t in sorted({t for t in targets if targets.count(t) > 1}):
        p.problems.append(f"several files would become {t}: " + ", ".join(s for s, d in p.moves if d == t))
    # Every entry of the table takes part in rewriting once its target exists (or is about to).
    moving = dict(p.moves)
    for old, new in [*MOVES.items(), *moving.items()]:
        if old in moving or (root / new).exists():
            p.modules[module_of(old)] = module_of(new)
            p.paths[old] = new
    for old, new in DIR_MOVES.items():
        if (root / old).exists() or (root / new).exists():
            p.paths[old] = new
            if (root / old / "__init__.py").exists() or (root / new / "__init__.py").exists():
                p.modules[module_of(old)] = module_of(new)
    _moved_earlier(root, p)
    p.problems.extend(_shadowing(root, p))
    return p


def _moved_earlier(root: Path, p: Plan) -> None:
    """Modules a prefix rule moved in an earlier run: references to their old names that arrive
    later (a branch merged after the move) are rewritten too."""
    for prefix, target, strip in PREFIX_RULES:
        top, start = prefix.rsplit("/", 1)
        d = root / target
        if not d.is_dir():
            continue
        for f in sorted(d.glob("*.py")):
            if f.stem == "__init__" or not (strip or f.stem.startswith(start)):
                continue
            old = f"{prefix}{f.stem}.py" if strip else f"{top}/{f.stem}.py"
            if old in MOVES or (root / old).exists():
                continue
            new = f"{target}/{f.name}"
            p.modules.setdefault(module_of(old), module_of(new))
            p.paths.setdefault(old, new)


def submodules(package: str, p: Plan, root: Path) -> set[str]:
    """The names of the modules and packages directly inside ``package`` after the move."""
    prefix = package + "."
    names = {m[len(prefix):].split(".")[0] for m in p.modules.values() if m.startswith(prefix)}
    d = root.joinpath(*package.split("."))
    if d.is_dir():
        names |= {e.stem for e in d.iterdir() if e.suffix == ".py" or (e.is_dir() and e.name != "__pycache__")}
    names.discard("__init__")
    return names


def _shadowing(root: Path, p: Plan) -> list[str]:
    """An old module that becomes a package of the same name (``policies/security.py`` →
    ``policies/security/``) must not define a name that is also a module of the new package:
    ``policies.security.X`` would be ambiguous to rewrite."""
    out = []
    for old, new in p.moves:
        package = module_of(old)
        if not module_of(new).startswith(package + "."):
            continue
        subs = submodules(package, p, root)
        tree = ast.parse((root / old).read_text(encoding="utf-8"))
        defined = set()
        for node in tree.body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                defined.add(node.name)
            elif isinstance(node, ast.Assign):
                defined |= {t.id for t in node.targets if isinstance(t, ast.Name)}
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                defined.add(node.target.id)
        for name in sorted(defined & subs):
            out.append(f"{old} defines {name!r}, which is also the module {package}.{name} after the move")
    return out


# --- rewriting ------------------------------------------------------------------------------------

class Rewriter:
    def __init__(self, p: Plan, root: Path) -> None:
        self.modules = p.modules
        # Old modules whose name becomes a package: ``policies.security`` followed by one of the
        # package's modules is already the new form.
        self.shadowed = {old: submodules(old, p, root) for old, new in p.modules.items() if new.startswith(old + ".")}
        self.paths = p.paths
        self.dotted = re.compile(r"(?<![\w.])((?:sfa_sdk\._)?)((?:" + "|".join(ROOTS) + r")(?:\.\w+)+)")
        self.from_import = re.compile(
            r"(?<![\w.])from([ \t]+)((?:sfa_sdk\._)?(?:" + "|".join(ROOTS) + r")(?:\.\w+)*)([ \t]+)import[ \t]+"
            r"(\([^)]*\)|[^\n\"'#\\;]*[^\n\"'#\\; \t])")
        # ``policies/x.py``, and ``policies/security_rules_<topic>.py`` as docs write a pattern
        self.file_path = re.compile(r"(?<![\w-])((?:" + "|".join(ROOTS) + r")/(?:\w+/)*(?:\w|<\w+>)+\.py)(?!\w)")
        dirs = sorted((k for k in self.paths if not k.endswith(".py")), key=len, reverse=True)
        self.dir_path = re.compile(r"(?<![\w-])(" + "|".join(map(re.escape, dirs)) + r")(?!\w)") if dirs else None

    def rename(self, dotted: str) -> str:
        """The new name of a dotted reference (unchanged if it names nothing that moved)."""
        parts = dotted.split(".")
        for k in range(len(parts), 1, -1):
            head = ".".join(parts[:k])
            if head in self.modules:
                if head in self.shadowed and k < len(parts) and parts[k] in self.shadowed[head]:
                    return dotted  # already ``package.module…``
                return ".".join([self.modules[head], *parts[k:]])
        return dotted

    def _dotted(self, m: re.Match[str]) -> str:
        prefix, name = m.group(1), m.group(2)
        before = m.string[max(0, m.start() - 12):m.start()]
        after = m.string[m.end():m.end() + 12]
        if re.search(r"\bfrom\s+$", before) and re.match(r"\s+import\b", after):
            return m.group(0)  # handled by _from_import, which knows the imported names
        if name in self.shadowed and after.startswith("*"):
            return m.group(0)  # ``policies.response*``: the modules of a concern, now its package
        return prefix + self.rename(name)

    def _from_import(self, m: re.Match[str]) -> str:
        source, names_text = m.group(2), m.group(4)
        prefix = "sfa_sdk._" if source.startswith("sfa_sdk._") else ""
        module = source.removeprefix(prefix)
        inner = names_text.strip()
        parens = inner.startswith("(")
        items = [i.strip() for i in inner.strip("()").replace("\n", " ").split(",") if i.strip()]
        groups: dict[str, list[str]] = {}
        for item in items:
            bits = item.split()
            if len(bits) not in (1, 3) or (len(bits) == 3 and bits[1] != "as") or bits[0] == "*":
                new_mod, text = self.rename(module), item
            else:
                name, alias = bits[0], bits[2] if len(bits) == 3 else bits[0]
                # ``module.name`` renamed: a moved module (new parent and leaf) or an attribute of one.
                new_mod, leaf = self.rename(f"{module}.{name}").rsplit(".", 1)
                text = leaf if leaf == alias else f"{leaf} as {alias}"
            groups.setdefault(new_mod, []).append(text)
        if list(groups) == [module]:
            return m.group(0)
        only = next(iter(groups))
        if len(groups) == 1 and groups[only] == items:
            return m.group(0).replace(source, prefix + only, 1)  # the same names: keep the layout
        indent = re.match(r"[ \t]*", m.string[m.string.rfind("\n", 0, m.start()) + 1:m.start()])
        sep = "\n" + (indent.group(0) if indent else "")
        out = []
        for new_mod, texts in groups.items():
            body = ", ".join(texts)
            out.append(f"from{m.group(1)}{prefix}{new_mod}{m.group(3)}import " + (f"({body})" if parens else body))
        return sep.join(out)

    def _file_path(self, m: re.Match[str]) -> str:
        path = m.group(1)
        if path in self.paths:
            return self.paths[path]
        for old, new in self.paths.items():
            if not old.endswith(".py") and path.startswith(old + "/"):
                return new + path[len(old):]
        # a module named by a prefix rule that is not (or no longer) a file: a pattern in a docstring
        return _prefix_target(path) or path

    def text(self, text: str) -> str:
        text = self.file_path.sub(self._file_path, text)
        if self.dir_path is not None:
            text = self.dir_path.sub(lambda m: self.paths[m.group(1)], text)
        text = self.dotted.sub(self._dotted, text)
        text = self.from_import.sub(self._from_import, text)
        for old, new in SEGMENT_FIXES:
            text = text.replace(old, new)
        return text


def tracked_text_files(root: Path) -> Iterable[Path]:
    for rel in run_git(root, "ls-files", "-co", "--exclude-standard").splitlines():
        if rel in SKIP_FILES or rel.startswith((".venv/", "var/")):
            continue
        path = root / rel
        name = path.name
        if path.is_file() and (path.suffix in TEXT_SUFFIXES or name in ("Makefile", "Dockerfile")):
            yield path


# --- doing it ---------------------------------------------------------------------------------------

def git_mv(root: Path, src: str, dst: str) -> None:
    (root / dst).parent.mkdir(parents=True, exist_ok=True)
    tracked = bool(run_git(root, "ls-files", "--", src).strip())
    if tracked:
        run_git(root, "mv", src, dst)
    else:
        shutil.move(str(root / src), str(root / dst))


def _remove_if_only_caches(d: Path) -> None:
    if d.is_dir() and all(e.name == "__pycache__" for e in d.iterdir()):
        shutil.rmtree(d)


def apply(root: Path, p: Plan, say: Callable[[str], None]) -> list[Path]:
    for src, dst in p.dir_moves:
        if (root / dst).exists():
            for f in sorted((root / src).rglob("*")):
                if f.is_file() and "__pycache__" not in f.parts:
                    rel = f.relative_to(root).as_posix()
                    git_mv(root, rel, dst + rel[len(src):])
            shutil.rmtree(root / src, ignore_errors=True)
        else:
            git_mv(root, src, dst)
        say(f"moved {src}/ → {dst}/")
    for src, dst in p.moves:
        git_mv(root, src, dst)
        say(f"moved {src} → {dst}")
    for pkg, doc in PACKAGES.items():
        init = root / pkg / "__init__.py"
        if (root / pkg).is_dir() and not init.exists():
            init.write_text(f'"""{doc}\n"""\n', encoding="utf-8")
            run_git(root, "add", "--", init.relative_to(root).as_posix())
            say(f"created {pkg}/__init__.py")
    for top in ROOTS:
        for d in (root / top).iterdir():
            _remove_if_only_caches(d)
    for rel, old, new in CONTENT_FIXES:
        f = root / rel
        if f.exists():
            text = f.read_text(encoding="utf-8")
            if old in text:
                f.write_text(text.replace(old, new), encoding="utf-8")
                say(f"adjusted {rel}")
    rewriter = Rewriter(p, root)
    changed = []
    for path in tracked_text_files(root):
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        if not any(r in text for r in ROOTS):
            continue
        new = rewriter.text(text)
        if new != text:
            path.write_text(new, encoding="utf-8")
            changed.append(path)
    for path in changed:
        say(f"rewrote {path.relative_to(root).as_posix()}")
    return changed


def sort_imports(root: Path, files: list[Path], say: Callable[[str], None]) -> None:
    py = [str(f.relative_to(root)) for f in files if f.suffix == ".py"]
    if not py:
        return
    ruff = root / ".venv" / "bin" / "ruff"
    exe = str(ruff) if ruff.exists() else shutil.which("ruff")
    if exe is None:
        say("ruff not found: run `ruff check --select I --fix .` to sort the rewritten imports")
        return
    subprocess.run([exe, "check", "--quiet", "--select", "I", "--fix", "--exit-zero", *py], cwd=root, check=True)
    say(f"sorted imports in {len(py)} rewritten Python files (ruff --select I --fix)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="scripts/restructure.py", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dry-run", action="store_true", help="print the plan and change nothing")
    ap.add_argument("--allow-unmapped", action="store_true",
                    help="leave files that no rule maps where they are (listed) instead of stopping")
    ap.add_argument("--no-sort", action="store_true", help="do not run ruff's import sorting afterwards")
    args = ap.parse_args(argv)
    root = Path(run_git(Path(__file__).resolve().parent, "rev-parse", "--show-toplevel").strip())
    os.chdir(root)
    p = plan(root)
    if p.problems:
        print("restructure: cannot move:\n  " + "\n  ".join(p.problems), file=sys.stderr)
        return 1
    if p.unmapped:
        listing = "\n  ".join(p.unmapped)
        if not args.allow_unmapped:
            print(f"restructure: no rule says where these go (add them to MOVES or PREFIX_RULES in "
                  f"scripts/restructure.py, or pass --allow-unmapped):\n  {listing}", file=sys.stderr)
            return 1
        print(f"restructure: left where they are (--allow-unmapped):\n  {listing}")
    if args.dry_run:
        for src, dst in [*p.dir_moves, *p.moves]:
            print(f"{src} → {dst}")
        print(f"{len(p.moves)} files and {len(p.dir_moves)} directories to move; "
              f"{len(p.modules)} module names to rewrite")
        return 0
    changed = apply(root, p, print)
    if not args.no_sort:
        sort_imports(root, changed, print)
    print(f"restructure: {len(p.moves)} files and {len(p.dir_moves)} directories moved, "
          f"{len(changed)} files rewritten")
    return 0


if __name__ == "__main__":
    sys.exit(main())
