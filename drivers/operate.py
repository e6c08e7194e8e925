"""``python -m drivers.operate`` — the sfa-ops daemon (a Ray job).

Starts (or joins) Ray, starts the supervisor, which starts the observers, service monitors and
the alert manager, and runs until SIGINT/SIGTERM or ``--duration``. With no ``--broker`` an
embedded mosquitto is started on a free loopback port and its URL printed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from adapters.mqtt import tracing
from adapters.runtime.logs import configure as configure_logging
from adapters.runtime.logs import ray_logging_config
from drivers.options import (
    LOG_OPTIONS,
    Option,
    OptionError,
    fail,
    listen_address,
    non_negative_int,
    positive_int,
    resolve,
    seconds,
)

PROG = "python -m drivers.operate"

OPTIONS = [
    Option("broker", "MQTT broker URL, mqtt://[user@]host:port or mqtts:// for TLS; "
           "none: start an embedded mosquitto on a free loopback port", metavar="URL"),
    Option("broker-password-file", "file holding the broker password (keeps it off the command line; "
           "or SFA_OPS_MQTT_PASSWORD in the environment)", metavar="FILE"),
    Option("cluster-id", "cluster id used in system/{cluster}/... topics", default="local"),
    Option("mqtt-session-expiry", "how long the broker keeps each sfa-ops actor's MQTT session (its "
           "subscriptions and queued QoS 1 messages) after a lost connection; 0: clean sessions",
           default=300.0, convert=seconds, metavar="DURATION"),
    Option("store", "sqlite:///path or postgresql://user@host/db", default="sqlite:///var/sfa-ops.db", metavar="URL"),
    Option("policies", "directory of policy YAML files overriding the defaults in policies/", metavar="DIR"),
    Option("ray-address", "Ray cluster to join (default: start a local Ray, or the job's cluster)", metavar="ADDR"),
    Option("observers", "number of observer actors", default=1, convert=positive_int),
    Option("duration", "stop after this long (e.g. 90s, 5m); default: until SIGINT/SIGTERM", convert=seconds),
    Option("services", "services to monitor from the start (others are found on first sight)",
           default=[], repeatable=True, metavar="NAME"),
    Option("max-discovered-services", "services seen only in traffic (not in --services, no instance "
           "presence) that get a monitor; calls to further names are counted as observed.unknownServices",
           default=64, convert=positive_int, metavar="N"),
    Option("status-every", "print a status line this often (0: never)", default=10.0, convert=seconds),
    *LOG_OPTIONS,
    Option("http", "serve the live status page (/), /status.json, Prometheus /metrics, /healthz and /readyz "
           "on HOST:PORT (PORT alone: loopback; default: off)", convert=listen_address, metavar="HOST:PORT"),
    Option("enforcement-redis", "Redis where enforcement actions are written as keys with a TTL "
           "(sfa:block:ip:{ip}, sfa:suspend:user:{id}, sfa:ratelimit:user:{id}) for gateways", metavar="URL"),
    Option("no-security", "do not run the security analyst, incident responder and audit writer", flag=True),
    Option("audit-key-file", "the audit chain's HMAC key (default var/audit.key, generated on first run; "
           "or SFA_OPS_AUDIT_KEY); keep it out of the database and its backups", metavar="FILE"),
    Option("audit-anchor-file", "JSON-lines file every audit anchor (chain heads and row counts, also "
           "published signed on system/{cluster}/audit/anchor) is appended to; "
           "drivers.audit verify --anchors checks the chains against it", default="var/audit-anchors.jsonl",
           metavar="FILE"),
    Option("audit-anchor-interval", "publish an audit anchor this often (and at shutdown; 0: at shutdown only)",
           default=60.0, convert=seconds, metavar="DURATION"),
    Option("no-audit-calls", "do not write an audit event per observed call (data-access events still are)",
           flag=True),
    Option("check-postgres", "PostgreSQL server to check (postgresql://user[:pass]@host:port/db)",
           default=[], repeatable=True, metavar="DSN"),
    Option("check-redis", "Redis server to check (redis://[:pass@]host:port/db or rediss://)",
           default=[], repeatable=True, metavar="URL"),
    Option("check-mongodb", "MongoDB replica set or member to check (mongodb://[user:pass@]host:port"
           "[,host:port]/?replicaSet=rs0, or one member with ?directConnection=true; mongodb+srv://)",
           default=[], repeatable=True, metavar="URI"),
    Option("expect-replicas", "replicas each checked PostgreSQL primary, Redis master and MongoDB replica "
           "set must have (fewer is an infrastructure error)", default=0, convert=non_negative_int, metavar="N"),
    Option("emqx-api", "EMQX management API base URL (http://host:18083): the broker check becomes "
           "emqx_cluster and reads nodes, stats, metrics and alarms", metavar="URL"),
    Option("emqx-api-key", "EMQX API key (dashboard → API keys)", metavar="KEY"),
    Option("emqx-api-secret", "EMQX API secret (prefer SFA_OPS_EMQX_API_SECRET to the command line)",
           metavar="SECRET"),
    Option("kubernetes", "check the Kubernetes cluster (in-cluster config, else kubeconfig) and feed pod "
           "status to the service monitors", default=False, flag=True),
    Option("kube-namespace", "namespace of the services' pods (label app={Service})", default="default",
           metavar="NS"),
    Option("kube-api", "explicit Kubernetes API URL instead of in-cluster/kubeconfig (tests, replays)",
           metavar="URL"),
    Option("alertmanager", "Alertmanager (http://host:9093) that gets every alert through API v2, re-sent "
           "while active", default=[], repeatable=True, metavar="URL"),
    Option("alertmanager-resend-interval", "how often active alerts are re-sent to --alertmanager "
           "(endsAt is set 4 intervals ahead)", default=60.0, convert=seconds, metavar="DURATION"),
    Option("no-metric-rules", "do not evaluate the alerting rules of metric_rules.yaml (the ones rendered as "
           "deploy/prometheus/rules.yml) on operate's own series; to change the rules, put a metric_rules.yaml "
           "in --policies DIR", flag=True),
    Option("signing-key", "Ed25519 private key (PEM) to sign everything published under system/{cluster}/; "
           "give SDK clients the public key (PlatformAwareClient(trust=SystemTrust.from_files(...)))",
           metavar="FILE"),
]

logger = logging.getLogger("sfa_ops.operate")


def validate(opts: dict[str, Any]) -> None:
    """Check everything that can be checked before Ray starts; raises OptionError."""
    from adapters.mqtt.bus import MqttConfig, MqttConfigError
    from adapters.store import StoreConfigError, open_store
    from adapters.store.audit_key import load_audit_key
    from policies.common.config import PolicyConfigError
    from protocol.names import check_segment, check_service_name

    if opts.get("broker_password_file") and not opts["broker"]:
        raise OptionError("--broker-password-file needs --broker (the embedded broker has no password)")
    if opts["broker"]:
        try:
            MqttConfig.from_url(broker_url(opts))
        except MqttConfigError as exc:
            raise OptionError(f"--broker: {exc}") from exc
    try:
        check_segment(opts["cluster_id"], field="cluster-id", max_len=63)
        for s in opts["services"]:
            check_service_name(s, field="--services")
    except ValueError as exc:
        raise OptionError(f"--cluster-id/--services: {exc}") from exc
    try:
        open_store(opts["store"])
    except StoreConfigError as exc:
        raise OptionError(f"--store: {exc}") from exc
    try:
        load_audit_key(opts.get("audit_key_file"))
    except StoreConfigError as exc:
        raise OptionError(f"--audit-key-file: {exc}") from exc
    _validate_infra(opts)
    if opts.get("signing_key"):
        from adapters.mqtt.signing import Signer, SigningKeyError

        try:
            Signer.from_file(opts["signing_key"])
        except SigningKeyError as exc:
            raise OptionError(f"--signing-key: {exc}") from exc
    try:
        load_all_policies(opts["policies"])
    except PolicyConfigError as exc:
        raise OptionError(f"--policies: {exc}") from exc


def broker_url(opts: dict[str, Any]) -> str:
    """``--broker`` with the password of ``--broker-password-file`` in it (MqttConfigError if unusable)."""
    from adapters.mqtt.config import read_secret_file, url_with_password

    url = str(opts["broker"])
    path = opts.get("broker_password_file")
    return url_with_password(url, read_secret_file(path, what="--broker-password-file")) if path else url


def _validate_infra(opts: dict[str, Any]) -> None:
    """The infrastructure check options: URL schemes, EMQX credentials, namespace."""
    import re
    from urllib.parse import urlsplit

    from adapters.runtime.urls import postgres_tls_problem, redact_url

    def url(option: str, value: str, schemes: tuple[str, ...], example: str) -> None:
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError as exc:
            raise OptionError(f"--{option}: cannot parse the URL ({exc}); write {example}") from exc
        if parts.scheme not in schemes or not parts.hostname:
            raise OptionError(f"--{option}: expected a {'/'.join(schemes)} URL with a host, like {example}")

    for dsn in opts.get("check_postgres") or []:
        url("check-postgres", dsn, ("postgresql", "postgres"), "postgresql://sfa@db.internal:5432/postgres")
        problem = postgres_tls_problem(dsn, os.environ)
        if problem:
            raise OptionError(f"--check-postgres {redact_url(dsn)}: {problem}")
    for u in opts.get("check_redis") or []:
        url("check-redis", u, ("redis", "rediss"), "redis://cache.internal:6379/0")
    for u in opts.get("check_mongodb") or []:
        mongodb_uri_problem = _mongodb_uri_problem(u)
        if mongodb_uri_problem:
            raise OptionError(f"--check-mongodb {redact_url(u)}: {mongodb_uri_problem}; write "
                              "mongodb://db1.internal:27017,db2.internal:27017/?replicaSet=rs0")
    if opts.get("emqx_api"):
        url("emqx-api", opts["emqx_api"], ("http", "https"), "http://emqx.internal:18083")
        if not opts.get("emqx_api_key") or not opts.get("emqx_api_secret"):
            raise OptionError("--emqx-api needs --emqx-api-key and --emqx-api-secret (or SFA_OPS_EMQX_API_KEY / "
                              "SFA_OPS_EMQX_API_SECRET)")
    elif opts.get("emqx_api_key") or opts.get("emqx_api_secret"):
        raise OptionError("--emqx-api-key/--emqx-api-secret given without --emqx-api URL")
    for u in opts.get("alertmanager") or []:
        url("alertmanager", u, ("http", "https"), "http://alertmanager.internal:9093")
    resend = opts.get("alertmanager_resend_interval")
    if resend is not None and not resend > 0:
        raise OptionError("--alertmanager-resend-interval must be more than 0 (e.g. 60s)")
    if opts.get("kube_api"):
        url("kube-api", opts["kube_api"], ("http", "https"), "https://kubernetes.default.svc")
    ns = opts.get("kube_namespace") or "default"
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", ns):
        raise OptionError(f"--kube-namespace {ns!r}: a Kubernetes namespace is 1-63 lowercase letters, digits "
                          "and '-', starting and ending with a letter or digit")


def _mongodb_uri_problem(uri: str) -> str | None:
    """Why ``uri`` is not a usable MongoDB connection string (None when it is)."""
    from pymongo.errors import ConfigurationError, InvalidURI
    from pymongo.uri_parser import parse_uri

    if not uri.startswith(("mongodb://", "mongodb+srv://")):
        return "expected a mongodb:// or mongodb+srv:// URI"
    if uri.startswith("mongodb+srv://"):
        return None  # resolving its SRV record is the check's job (DNS may not answer at startup)
    try:
        parse_uri(uri)
    except (InvalidURI, ConfigurationError, ValueError) as exc:
        secret = uri[len("mongodb://"):].partition("/")[0].rpartition("@")[0].partition(":")[2]
        text = str(exc).replace(uri, "<uri>")
        return "cannot parse the URI" if secret and secret in text else text
    return None


def load_all_policies(directory: str | None) -> None:
    """Load every policy file once so a bad override stops startup, not an actor later."""
    from adapters.notify.registry import load_checked_alerting_policy
    from policies.breaker.cascade import load_dependency_policy
    from policies.breaker.settings import load_breaker_policy
    from policies.health.status import load_health_policy
    from policies.infrastructure.checks import load_infrastructure_policy
    from policies.metrics.rules import load_metric_rules
    from policies.observation.config import load_observation_policy

    for loader in (load_breaker_policy, load_health_policy, load_observation_policy, load_dependency_policy,
                   load_checked_alerting_policy, load_infrastructure_policy, load_metric_rules):
        loader(directory)


def _sqlite_dir(store_url: str) -> None:
    if store_url.startswith("sqlite:///") and not store_url.startswith("sqlite:////"):
        path = Path(store_url[len("sqlite:///"):])
        path.parent.mkdir(parents=True, exist_ok=True)


def _absolute_store(store_url: str) -> str:
    """Actors may run in another working directory: make a relative SQLite path absolute."""
    if store_url.startswith("sqlite:///") and not store_url.startswith("sqlite:////") and ":memory:" not in store_url:
        return "sqlite:///" + str(Path(store_url[len("sqlite:///"):]).resolve())
    return store_url


SUPERVISOR_WATCH_S = 2.0
"""How often the driver makes sure the supervisor is started (one actor call)."""


async def _keep_started(supervisor: Any) -> None:
    """Starts the supervisor again if Ray restarted it (its node was lost or it crashed): a restarted
    actor runs ``__init__`` only, and its observers, monitors and checkers, which it owns, died with it."""
    try:
        info = await asyncio.wait_for(supervisor.start.remote(), 120)
    except Exception as exc:  # the next watch tries again; the job keeps running
        print(f"sfa-ops: supervisor not answering ({type(exc).__name__}); retrying", flush=True)
        return
    if info.get("started"):
        print("sfa-ops: the supervisor was restarted by Ray; its actors are started again", flush=True)


def _end_actors(ray: Any, namespace: str, cluster: str) -> None:
    """End this cluster id's actors (detached: they outlive the supervisor that created them)."""
    for a in ray.util.list_named_actors(all_namespaces=True):
        name = a.get("name", "")
        if a.get("namespace") == namespace and name.startswith("sfa-") and (
                name.endswith(f"-{cluster}") or f"-{cluster}-" in name):
            with contextlib.suppress(Exception):
                ray.kill(ray.get_actor(name, namespace=namespace), no_restart=True)


async def run(opts: dict[str, Any], *, ready: asyncio.Event | None = None,
              stop: asyncio.Event | None = None) -> int:
    """Run the operations job until ``stop`` is set (default: SIGINT/SIGTERM) or ``--duration``."""
    import ray

    from actors.settings import OperateSettings
    from actors.supervisor import Supervisor
    from actors.supervisor_children import named
    from adapters.http.status_server import StatusServer
    from adapters.runtime.processes import ChildService, start_mosquitto
    from adapters.runtime.urls import redact_url
    from adapters.store.audit_key import load_audit_key

    embedded: ChildService | None = None
    broker = broker_url(opts) if opts["broker"] else None
    if not broker:
        embedded = start_mosquitto()
        broker = embedded.url
        print(f"sfa-ops: embedded mosquitto at {redact_url(broker)}", flush=True)
    _sqlite_dir(opts["store"])
    audit_key, key_source = load_audit_key(opts.get("audit_key_file"), create=True)
    print(f"sfa-ops: audit chain keyed by {key_source}", flush=True)
    settings = OperateSettings(
        broker_url=broker,
        cluster_id=opts["cluster_id"],
        mqtt_session_expiry_s=int(opts.get("mqtt_session_expiry", 300.0)),
        store_url=_absolute_store(opts["store"]),
        policies_dir=str(Path(opts["policies"]).resolve()) if opts["policies"] else None,
        observers=opts["observers"],
        services=tuple(opts["services"]),
        max_discovered_services=opts.get("max_discovered_services", 64),
        check_postgres=tuple(opts.get("check_postgres") or ()),
        check_redis=tuple(opts.get("check_redis") or ()),
        check_mongodb=tuple(opts.get("check_mongodb") or ()),
        expect_replicas=int(opts.get("expect_replicas") or 0),
        emqx_api=opts.get("emqx_api"),
        emqx_api_key=opts.get("emqx_api_key"),
        emqx_api_secret=opts.get("emqx_api_secret"),
        kubernetes=bool(opts.get("kubernetes")),
        kube_namespace=opts.get("kube_namespace") or "default",
        kube_api=opts.get("kube_api"),
        security=not opts.get("no_security"),
        audit_calls=not opts.get("no_audit_calls"),
        enforcement_redis=opts.get("enforcement_redis"),
        alertmanager_urls=tuple(opts.get("alertmanager") or ()),
        alertmanager_resend_s=float(opts.get("alertmanager_resend_interval") or 60.0),
        audit_key=audit_key.decode() if audit_key else None,
        audit_anchor_file=str(Path(opts["audit_anchor_file"]).resolve()) if opts.get("audit_anchor_file") else None,
        audit_anchor_s=float(opts.get("audit_anchor_interval", 60.0) or 0.0),
        signing_key_file=str(Path(opts["signing_key"]).resolve()) if opts.get("signing_key") else None,
        metric_rules=not opts.get("no_metric_rules"),
    )
    started_ray = False
    if not ray.is_initialized():
        # No address: a fresh local Ray ("local"), never whatever cluster was last started on this
        # machine. Inside a Ray job RAY_ADDRESS names the job's cluster.
        address = opts["ray_address"] or os.environ.get("RAY_ADDRESS") or "local"
        # Actors' records reach this process's output (and `ray job logs`) at the chosen level.
        ray.init(address=address, namespace=settings.namespace, log_to_driver=True,
                 logging_config=ray_logging_config(opts.get("log_level", "WARNING"), opts.get("log_format", "text")),
                 include_dashboard=False if address == "local" else None, configure_logging=False,
                 runtime_env=tracing.ray_runtime_env())  # observers export spans when OTEL_* is set
        configure_logging(opts.get("log_level", "WARNING"), opts.get("log_format", "text"))  # one root handler
        started_ray = True
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
    supervisor = named(Supervisor, settings.actor_name("supervisor"), settings.namespace).remote(settings)
    http: StatusServer | None = None
    try:
        info = await supervisor.start.remote()
        print(f"sfa-ops: operating cluster {settings.cluster_id!r} on {redact_url(broker)} with "
              f"{info['observers']} observer(s); store {redact_url(settings.store_url)}", flush=True)
        if opts.get("http"):
            http = StatusServer(*opts["http"])
            print(f"sfa-ops: status page at {await http.start()} (also /metrics, /status.json, /healthz, /readyz)",
                  flush=True)
        if ready is not None:
            ready.set()
        deadline = None if opts["duration"] is None else time.monotonic() + opts["duration"]
        every = opts["status_every"]
        next_status = time.monotonic() + every if every else None
        next_watch = time.monotonic() + SUPERVISOR_WATCH_S
        while not stop.is_set():
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                break
            wake = min(x for x in (deadline, next_status, now + 1.0) if x is not None)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(0.0, wake - now))
            if not stop.is_set() and time.monotonic() >= next_watch:
                next_watch = time.monotonic() + SUPERVISOR_WATCH_S
                await _keep_started(supervisor)
            if http is not None and not stop.is_set():
                with contextlib.suppress(Exception):  # a stale snapshot makes /readyz say so
                    http.update(await asyncio.wait_for(supervisor.status.remote(), 5))
            if next_status is not None and time.monotonic() >= next_status:
                next_status += every
                st = await supervisor.status.remote()
                h = st["health"]
                services = ", ".join(f"{n}={s['status']}/{s['breaker']}" for n, s in h["services"].items())
                print(f"sfa-ops: {h['status']}; observed {h['observed']}; {services or 'no services yet'}",
                      flush=True)
        print("sfa-ops: stopping (flushing pending work)", flush=True)
        await supervisor.stop.remote()
        return 0
    finally:
        if http is not None:
            await http.stop()
        with contextlib.suppress(Exception):
            ray.kill(supervisor)
        with contextlib.suppress(Exception):  # the supervisor's stop ends them; not if it never ran
            _end_actors(ray, settings.namespace, settings.cluster_id)
        if started_ray:
            ray.shutdown()
        if embedded is not None:
            embedded.stop()


def main(argv: Sequence[str] | None = None) -> int:
    try:
        opts = resolve(OPTIONS, argv, prog=PROG, description=__doc__ or "")
        validate(opts)
    except OptionError as exc:
        fail(PROG, str(exc))
    configure_logging(opts["log_level"], opts["log_format"])
    return asyncio.run(run(opts))


if __name__ == "__main__":
    sys.exit(main())
