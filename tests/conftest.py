"""Session-wide real services: one mosquitto, one Redis, one PostgreSQL, one Prometheus Alertmanager
and one local Ray per test session, each started by the project's own code on a free loopback port
and stopped at the end."""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

from adapters.runtime.processes import ChildService, start_alertmanager, start_postgres, start_redis
from policies.security.broker_acl import CALLER, SFA_OPS
from tests.support.broker import HARNESS, SessionBroker
from tests.support.http_receiver import HttpReceiver, http_receiver

_RAY_TOKEN_DIR: str | None = None


def pytest_configure(config: pytest.Config) -> None:
    """Ray authenticates with a token (on by default). The session makes its own, in a private
    temporary file named by RAY_AUTH_TOKEN_PATH, for its Ray and every driver it starts: no test
    depends on, or writes, a token in HOME."""
    global _RAY_TOKEN_DIR
    if "RAY_AUTH_TOKEN" in os.environ or "RAY_AUTH_TOKEN_PATH" in os.environ:
        return
    _RAY_TOKEN_DIR = tempfile.mkdtemp(prefix="sfa-ray-token-")
    token = os.path.join(_RAY_TOKEN_DIR, "auth_token")
    with open(os.open(token, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
        f.write(secrets.token_hex(32))
    os.environ["RAY_AUTH_TOKEN_PATH"] = token


def pytest_unconfigure(config: pytest.Config) -> None:
    if _RAY_TOKEN_DIR is not None:
        os.environ.pop("RAY_AUTH_TOKEN_PATH", None)
        shutil.rmtree(_RAY_TOKEN_DIR, ignore_errors=True)


@pytest.fixture(scope="session")
def session_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SessionBroker]:
    """A real mosquitto broker shared by the session (tests use unique topics), with authentication
    and the ACLs rendered from ``policies.security.broker_acl`` for every cluster id (``tests.support.broker``)."""
    broker = SessionBroker(tmp_path_factory.mktemp("session-broker"))
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def mosquitto(session_broker: SessionBroker) -> ChildService:
    return session_broker.child


@pytest.fixture(scope="session")
def broker_url(session_broker: SessionBroker) -> str:
    """The test harness's login (observer and attacker: it may publish and read every topic).
    ``operations()`` and ``ServiceProcess`` log in as sfa-ops and as the service from it."""
    return session_broker.url(HARNESS)


@pytest.fixture(scope="session")
def sfa_ops_url(session_broker: SessionBroker) -> str:
    """What operate connects as."""
    return session_broker.url(SFA_OPS)


@pytest.fixture(scope="session")
def caller_url(session_broker: SessionBroker) -> str:
    """A platform client (the ``caller`` principal)."""
    return session_broker.url(CALLER)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[ChildService]:
    svc = start_redis()
    yield svc
    svc.stop()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[ChildService]:
    svc = start_postgres()
    yield svc
    svc.stop()


@pytest.fixture(scope="session")
def alertmanager_webhook() -> Iterator[HttpReceiver]:
    """The HTTP receiver the session's Alertmanager notifies (path ``/am``; bodies: webhook v4)."""
    with http_receiver() as rx:
        yield rx


@pytest.fixture(scope="session")
def alertmanager(alertmanager_webhook: HttpReceiver) -> Iterator[ChildService]:
    """A real Alertmanager (resolve_timeout 3 s, groups by the ``test`` label, clustering off) whose
    one route notifies ``alertmanager_webhook`` at ``/am``; tests use a unique ``test`` label."""
    svc = start_alertmanager(webhook_url=f"{alertmanager_webhook.url}/am", resolve_timeout="3s")
    yield svc
    svc.stop()


@pytest.fixture(scope="module")
async def pg_database(postgres_server: ChildService) -> AsyncIterator[str]:
    """One fresh PostgreSQL database per test module, dropped afterwards."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(postgres_server.url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield postgres_server.url.rsplit("/", 1)[0] + "/" + name
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    """One local Ray for the whole test session (ray.init costs seconds)."""
    import ray

    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    # Ray gives its raylet 30 s to register; on a loaded 2-core machine that can pass. Try again.
    for attempt in range(3):
        try:
            # "local": a new Ray even when another cluster on this machine (ray start) is running.
            ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False,
                     configure_logging=False)
            break
        except Exception:
            ray.shutdown()
            if attempt == 2:
                raise
    yield
    ray.shutdown()
