"""Where and how the MQTT bus connects: :class:`MqttConfig`, built from ``mqtt://`` / ``mqtts://`` URLs.

Credentials and TLS files come from the URL, keyword overrides or the environment — never from
code. Precedence, highest first: ``overrides`` > URL > environment::

    SFA_OPS_MQTT_USERNAME, SFA_OPS_MQTT_PASSWORD, SFA_OPS_MQTT_PASSWORD_FILE (a file holding it)
    SFA_OPS_MQTT_CA_FILE, SFA_OPS_MQTT_CERT_FILE, SFA_OPS_MQTT_KEY_FILE
    SFA_OPS_MQTT_TLS_INSECURE   (1/true/yes or 0/false/no)

The error tree of the MQTT adapter is drawn in :mod:`adapters.mqtt.bus`; its base and the config
error live here so this module stands alone.
"""

from __future__ import annotations

import dataclasses
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from adapters.runtime.urls import redact_url

ENV_PREFIX = "SFA_OPS_MQTT_"
_DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class MqttBusError(Exception):
    """Base of every error the MQTT adapter raises."""


class MqttConfigError(MqttBusError, ValueError):
    """A bad MQTT URL or option; the message names the offending part."""


@dataclass(frozen=True, kw_only=True)
class MqttConfig:
    """Connection settings for one broker. Build it with :meth:`from_url`."""

    host: str
    port: int = 1883
    tls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    tls_insecure: bool = False
    keepalive_s: int = 30
    client_id_prefix: str = "sfa-ops"
    clean_start: bool = True
    # MQTT 5 Session Expiry Interval (s) sent in CONNECT: how long the broker keeps this client's
    # session (subscriptions, queued QoS >= 1 messages) after the connection drops. 0: the session
    # ends with the connection. With ``clean_start=False`` and a non-zero expiry a reconnect within
    # the expiry resumes the session; the bus re-subscribes anyway (the broker may have lost it) and
    # ends the session on ``stop()`` (DISCONNECT with expiry 0), so only a lost connection keeps it.
    session_expiry_s: int = 0
    connect_timeout_s: float = 10.0
    reconnect_min_s: float = 0.1
    reconnect_max_s: float = 5.0
    reconnect_stable_s: float = 10.0  # the backoff resets only after a connection stayed up this long
    # MQTT 5 subscription identifiers let the bus route each delivered copy to exactly the
    # subscription it was sent for; turn off for brokers that do not support them.
    use_subscription_ids: bool = True
    # Ed25519 private key (PEM): MqttBus signs every message it publishes under system/ with it.
    signing_key_file: str | None = None

    def __post_init__(self) -> None:
        if not self.host:
            raise MqttConfigError("MQTT host is empty")
        if not 1 <= self.port <= 65535:
            raise MqttConfigError(f"MQTT port {self.port} out of range 1..65535")
        if self.password is not None and self.username is None:
            raise MqttConfigError("MQTT password given without a username")
        if self.key_file is not None and self.cert_file is None:
            raise MqttConfigError("MQTT key_file given without cert_file")
        if not self.tls:
            for name in ("ca_file", "cert_file", "key_file"):
                if getattr(self, name) is not None:
                    raise MqttConfigError(f"MQTT {name} set but the URL scheme is mqtt:// (use mqtts://)")
            if self.tls_insecure:
                raise MqttConfigError("MQTT tls_insecure set but the URL scheme is mqtt:// (use mqtts://)")
        if self.keepalive_s < 0:
            raise MqttConfigError(f"MQTT keepalive_s {self.keepalive_s} must be >= 0")
        if self.connect_timeout_s <= 0:
            raise MqttConfigError(f"MQTT connect_timeout_s {self.connect_timeout_s} must be > 0")
        if not 0 < self.reconnect_min_s <= self.reconnect_max_s:
            raise MqttConfigError(
                f"MQTT reconnect backoff needs 0 < reconnect_min_s <= reconnect_max_s, "
                f"got {self.reconnect_min_s} and {self.reconnect_max_s}"
            )
        if not 0 <= self.session_expiry_s <= 0xFFFFFFFF:
            raise MqttConfigError(f"MQTT session_expiry_s {self.session_expiry_s} out of range 0..4294967295")
        if self.reconnect_stable_s < 0:
            raise MqttConfigError(f"MQTT reconnect_stable_s {self.reconnect_stable_s} must be >= 0")

    @classmethod
    def from_url(cls, url: str, *, env: Mapping[str, str] | None = None, **overrides: Any) -> MqttConfig:
        """Parse ``mqtt://[user:pass@]host[:port]`` or ``mqtts://…`` (TLS).

        ``env`` defaults to ``os.environ``; ``overrides`` are :class:`MqttConfig` fields.
        Raises :class:`MqttConfigError` naming the bad part (scheme, host, port, path, key…).
        """
        env = os.environ if env is None else env
        unknown = set(overrides) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            allowed = ", ".join(f.name for f in dataclasses.fields(cls))
            raise MqttConfigError(f"unknown MQTT option(s) {sorted(unknown)}; allowed: {allowed}")
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in _DEFAULT_PORTS:
            raise MqttConfigError(f"MQTT URL scheme {parts.scheme!r} not supported; use mqtt:// or mqtts://")
        try:
            port = parts.port
        except ValueError as exc:
            raise MqttConfigError(f"MQTT URL port is invalid in {redact_url(url)!r}: {exc}") from exc
        if not parts.hostname:
            raise MqttConfigError(f"MQTT URL has no host: {redact_url(url)!r}")
        if parts.path not in ("", "/"):
            raise MqttConfigError(f"MQTT URL path {parts.path!r} not supported (no path allowed)")
        if parts.query or parts.fragment:
            raise MqttConfigError("MQTT URL query/fragment not supported; pass options as overrides")
        values: dict[str, Any] = {
            "host": parts.hostname,
            "port": port if port is not None else _DEFAULT_PORTS[scheme],
            "tls": scheme == "mqtts",
            "username": unquote(parts.username) if parts.username else env.get(ENV_PREFIX + "USERNAME"),
            "password": unquote(parts.password) if parts.password else env.get(ENV_PREFIX + "PASSWORD"),
        }
        if values["password"] is None and env.get(ENV_PREFIX + "PASSWORD_FILE"):
            values["password"] = read_secret_file(env[ENV_PREFIX + "PASSWORD_FILE"], what=ENV_PREFIX + "PASSWORD_FILE")
        for name in ("ca_file", "cert_file", "key_file"):
            if env.get(ENV_PREFIX + name.upper()):
                values[name] = env[ENV_PREFIX + name.upper()]
        insecure = env.get(ENV_PREFIX + "TLS_INSECURE")
        if insecure is not None:
            values["tls_insecure"] = _parse_bool(ENV_PREFIX + "TLS_INSECURE", insecure)
        if not values["tls"]:
            # TLS files in the environment are meant for mqtts:// brokers; a plain URL ignores them.
            for name in ("ca_file", "cert_file", "key_file", "tls_insecure"):
                values.pop(name, None)
        values.update(overrides)
        try:
            return cls(**values)
        except TypeError as exc:  # a wrong-typed override reaching a comparison
            raise MqttConfigError(f"bad MQTT option: {exc}") from exc

    @property
    def redacted_url(self) -> str:
        """The URL without the password, for logs."""
        user = f"{self.username}:***@" if self.password else (f"{self.username}@" if self.username else "")
        return f"{'mqtts' if self.tls else 'mqtt'}://{user}{self.host}:{self.port}"

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context for ``mqtts://`` (None for plain ``mqtt://``). Reads the CA/cert files."""
        if not self.tls:
            return None
        try:
            ctx = ssl.create_default_context(cafile=self.ca_file)
            if self.cert_file is not None:
                ctx.load_cert_chain(self.cert_file, self.key_file)
        except (OSError, ssl.SSLError) as exc:
            raise MqttConfigError(f"MQTT TLS files unusable (ca={self.ca_file}, cert={self.cert_file}): {exc}") from exc
        if self.tls_insecure:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx


def read_secret_file(path: str, *, what: str = "password file") -> str:
    """The secret in ``path`` (one trailing newline stripped); MqttConfigError if unreadable or empty."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise MqttConfigError(f"{what} {path!r} cannot be read: {type(exc).__name__}") from exc
    secret = text[:-1] if text.endswith("\n") else text
    secret = secret[:-1] if secret.endswith("\r") else secret
    if not secret:
        raise MqttConfigError(f"{what} {path!r} is empty")
    return secret


def url_with_password(url: str, password: str, *, env: Mapping[str, str] | None = None) -> str:
    """``url`` with ``password`` as its password (percent-encoded); the user name comes from the
    URL or ``SFA_OPS_MQTT_USERNAME``. Raises MqttConfigError when there is no user name."""
    env = os.environ if env is None else env
    parts = urlsplit(url)
    user = parts.username or (quote(env[ENV_PREFIX + "USERNAME"], safe="") if env.get(ENV_PREFIX + "USERNAME") else None)
    if not user:
        raise MqttConfigError(f"a broker password needs a user name: write {parts.scheme}://USER@host:port "
                              f"or set {ENV_PREFIX}USERNAME")
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:{quote(password, safe='')}@{host}"))


def _parse_bool(name: str, raw: str) -> bool:
    low = raw.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise MqttConfigError(f"{name}={raw!r} is not a boolean (use 1/true/yes or 0/false/no)")

