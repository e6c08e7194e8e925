"""Secrets stay secret: the one URL redaction helper, settings reprs, the broker password file and
the PostgreSQL TLS rule (a DSN to another machine must name its sslmode)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors.settings import OperateSettings
from adapters.enforcement.actions import EnforcementConfig
from adapters.http.client import redact_url as redact_http_url
from adapters.mqtt.config import MqttConfig, MqttConfigError, read_secret_file, url_with_password
from adapters.probes.postgres_probe import PostgresTarget
from adapters.runtime.urls import is_loopback_host, postgres_tls_problem, redact_url
from adapters.store import StoreConfigError, open_store

SECRET = "Pa55-w0rd_xyz"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"mqtt://sfa:{SECRET}@broker:1883", "mqtt://sfa:***@broker:1883"),
        (f"redis://:{SECRET}@cache:6379/0", "redis://:***@cache:6379/0"),
        (f"postgresql://app:{SECRET}@db.internal:5432/ops?sslmode=verify-full",
         "postgresql://app:***@db.internal:5432/ops?sslmode=verify-full"),
        (f"postgresql://app@db/ops?password={SECRET}&sslmode=require&sslpassword={SECRET}",
         "postgresql://app@db/ops?password=***&sslmode=require&sslpassword=***"),
        (f"https://hooks.example/x?token={SECRET}&team=a#{SECRET}", "https://hooks.example/x?token=***&team=a"),
        ("mqtt://broker:1883", "mqtt://broker:1883"),
        ("sqlite:////var/lib/sfa/ops.db", "sqlite:////var/lib/sfa/ops.db"),
        ("sqlite:///var/ops.db", "sqlite:///var/ops.db"),
        (f"postgresql://u:{SECRET}@h:99999/db", "postgresql://u:***@h:99999/db"),
        (f"mqtt://u:{SECRET}@[::1/x", "<unparseable URL>"),
    ],
)
def test_redact_url_hides_passwords_and_secret_parameters(url: str, shown: str) -> None:
    """Password in the userinfo and secret-named query values become ***; the rest stays readable."""
    assert redact_url(url) == shown
    assert SECRET not in redact_url(url)


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="@/?#[]"), min_size=1,
               max_size=40))
def test_any_password_is_redacted(password: str) -> None:
    """Whatever the password (percent-encoded as a URL needs), neither it nor its encoding is shown."""
    from urllib.parse import quote

    encoded = quote(password, safe="")
    shown = redact_url(f"postgresql://u:{encoded}@db.internal:5432/ops")
    assert shown == "postgresql://u:***@db.internal:5432/ops"


def test_http_variant_drops_query_and_fragment() -> None:
    """Webhook URLs: the whole query goes (tokens often sit there), and the password."""
    assert redact_http_url(f"https://u:{SECRET}@hooks.example/h?x=1#f") == "https://u:***@hooks.example/h"


def test_settings_reprs_hold_no_secret() -> None:
    """Every settings object that holds a URL, DSN or secret keeps it out of its repr."""
    url = f"mqtt://sfa:{SECRET}@broker:1883"
    objects = [
        OperateSettings(broker_url=url, store_url=f"postgresql://a:{SECRET}@db/x?sslmode=require",
                        alert_webhooks=(f"https://h/{SECRET}",), check_postgres=(f"postgresql://a:{SECRET}@db/x",),
                        check_redis=(f"redis://:{SECRET}@r:6379/0",), emqx_api_secret=SECRET,
                        enforcement_redis=f"redis://:{SECRET}@r:6379/0"),
        MqttConfig.from_url(url, env={}),
        EnforcementConfig(redis_url=f"redis://:{SECRET}@r:6379/0", emqx_api_secret=SECRET),
        PostgresTarget(dsn=f"postgresql://a:{SECRET}@db/x"),
    ]
    for obj in objects:
        assert SECRET not in repr(obj), type(obj).__name__
        assert dataclasses.is_dataclass(obj)


def test_broker_password_file_goes_into_the_url(tmp_path: Path) -> None:
    """The file's password (trailing newline stripped) is percent-encoded into the URL; parsing it
    back gives the password; a missing user name or an empty/unreadable file is a clear error."""
    pw = tmp_path / "pw"
    pw.write_text("p@ss:w/rd%Z\n")
    url = url_with_password("mqtt://sfa@broker:1883", read_secret_file(str(pw)), env={})
    cfg = MqttConfig.from_url(url, env={})
    assert (cfg.username, cfg.password) == ("sfa", "p@ss:w/rd%Z")
    assert "p@ss" not in redact_url(url) and "p@ss" not in cfg.redacted_url
    assert MqttConfig.from_url(url_with_password("mqtt://broker", "x", env={"SFA_OPS_MQTT_USERNAME": "me"}),
                               env={}).username == "me"
    with pytest.raises(MqttConfigError, match="user name"):
        url_with_password("mqtt://broker:1883", "x", env={})
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(MqttConfigError, match="empty"):
        read_secret_file(str(tmp_path / "empty"))
    with pytest.raises(MqttConfigError, match="cannot be read"):
        read_secret_file(str(tmp_path / "missing"))


def test_password_file_from_the_environment(tmp_path: Path) -> None:
    """SFA_OPS_MQTT_PASSWORD_FILE is read when neither the URL nor SFA_OPS_MQTT_PASSWORD has one."""
    pw = tmp_path / "pw"
    pw.write_text(SECRET)
    env = {"SFA_OPS_MQTT_USERNAME": "sfa", "SFA_OPS_MQTT_PASSWORD_FILE": str(pw)}
    assert MqttConfig.from_url("mqtt://broker", env=env).password == SECRET
    assert MqttConfig.from_url("mqtt://broker", env={**env, "SFA_OPS_MQTT_PASSWORD": "direct"}).password == "direct"


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "127.3.2.1", "[::1]", "/run/postgresql", "", "LOCALHOST."])
def test_loopback_hosts(host: str) -> None:
    assert is_loopback_host(host)


@pytest.mark.parametrize("host", ["db.internal", "10.0.0.5", "[fe80::1]", "localhost.evil.example", "128.0.0.1"])
def test_remote_hosts(host: str) -> None:
    assert not is_loopback_host(host)


@pytest.mark.parametrize(
    ("dsn", "env", "refused"),
    [
        ("postgresql://sfa@db.internal/ops", {}, True),
        ("postgresql://sfa@10.0.0.5:5432/ops", {}, True),
        ("postgresql://sfa@127.0.0.1:5432,db.internal:5432/ops", {}, True),  # any remote host of several
        ("postgresql://sfa@/ops?host=db.internal", {}, True),
        ("postgresql://sfa@db.internal/ops?sslmode=verify-full", {}, False),
        ("postgresql://sfa@db.internal/ops?sslmode=disable", {}, False),  # a knowing choice
        ("postgresql://sfa@db.internal/ops", {"PGSSLMODE": "verify-ca"}, False),
        ("postgresql://sfa@127.0.0.1:5432/ops", {}, False),
        ("postgresql://sfa@localhost/ops", {}, False),
        ("postgresql://sfa@/ops?host=/run/postgresql", {}, False),
    ],
)
def test_postgres_dsn_to_another_machine_needs_an_sslmode(dsn: str, env: dict[str, str], refused: bool) -> None:
    """asyncpg's default sslmode=prefer neither verifies nor insists on TLS: refused off-machine."""
    problem = postgres_tls_problem(dsn, env)
    assert (problem is not None) == refused
    if refused:
        assert problem is not None and "sslmode=verify-full" in problem


def test_open_store_refuses_a_remote_dsn_without_sslmode() -> None:
    """The store refuses it up front, with the fix and without the password."""
    with pytest.raises(StoreConfigError, match="sslmode") as info:
        open_store(f"postgresql://sfa:{SECRET}@db.internal:5432/ops", env={})
    assert SECRET not in str(info.value)
    assert open_store("postgresql://sfa@db.internal:5432/ops?sslmode=verify-full", env={}) is not None
