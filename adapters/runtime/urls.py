"""The one way sfa-ops shows a URL or DSN to a person (logs, printed lines, error messages):
:func:`redact_url`. Credentials and secret-looking query parameters never leave the process.

- ``scheme://user:password@host`` becomes ``scheme://user:***@host`` (a bare ``:token@`` too);
- query parameters named like a secret (``password``, ``sslpassword``, ``token``, ``secret``,
  ``key``, ``sig``, ``auth``…) keep their name and lose their value (``***``);
- ``drop_query=True`` drops the whole query and fragment (webhook URLs often carry tokens there);
- the fragment is always dropped; an unparseable URL becomes ``<unparseable URL>``.

It also holds the rule for PostgreSQL DSNs (:func:`postgres_tls_problem`): one to another machine
must say how it uses TLS.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from urllib.parse import parse_qs, urlsplit

__all__ = ["is_loopback_host", "postgres_tls_problem", "redact_url"]

MASK = "***"
_SECRET_PARAM = re.compile(
    r"pass|pwd|secret|token|key|sig|auth|cred|session|cookie|otp|pin$", re.IGNORECASE)


def redact_url(url: str, *, drop_query: bool = False) -> str:
    """``url`` safe to print; see the module docstring."""
    try:
        parts = urlsplit(str(url))
    except ValueError:  # e.g. a broken [IPv6] host: show nothing we cannot take apart
        return "<unparseable URL>"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user, colon, _password = userinfo.partition(":")
        netloc = f"{user}:{MASK}@{hostport}" if colon else f"{userinfo}@{hostport}"
    query = "" if drop_query else _redact_query(parts.query)
    if netloc == parts.netloc and query == parts.query and not parts.fragment:
        return str(url)  # nothing to hide: as given
    # Built by hand: urlunsplit would turn sqlite:////abs/path into sqlite://abs/path.
    out = f"{parts.scheme}:" if parts.scheme else ""
    if parts.netloc or str(url)[len(out):].startswith("//"):
        out += "//" + netloc
    return out + parts.path + (f"?{query}" if query else "")


def _redact_query(query: str) -> str:
    if not query:
        return ""
    out = []
    for pair in query.split("&"):
        name, eq, _value = pair.partition("=")
        out.append(f"{name}={MASK}" if eq and _SECRET_PARAM.search(name) else pair)
    return "&".join(out)


_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})


def is_loopback_host(host: str) -> bool:
    """True for loopback names and addresses and for Unix-socket directories (``/run/postgresql``)."""
    if not host or host.startswith(("/", "%2F", "%2f")):
        return True
    h = host.strip("[]").lower().rstrip(".")
    if h in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def postgres_tls_problem(dsn: str, env: Mapping[str, str]) -> str | None:
    """Why a PostgreSQL DSN must not be used as is, or None.

    A DSN to any non-loopback host must choose its TLS mode (``sslmode=`` in the query, or
    ``PGSSLMODE`` in ``env``): libpq's and asyncpg's default ``prefer`` neither verifies the server
    nor insists on TLS, so a password would go to whoever answers.
    """
    parts = urlsplit(dsn)
    query = parse_qs(parts.query)
    if "sslmode" in query or "ssl" in query or env.get("PGSSLMODE"):
        return None
    hosts = [h.rsplit(":", 1)[0] if not h.endswith("]") else h for h in parts.netloc.rpartition("@")[2].split(",")]
    hosts += query.get("host", [])
    remote = [h for h in hosts if not is_loopback_host(h)]
    if not remote:
        return None
    return (f"PostgreSQL host {remote[0]!r} is not on this machine and the URL names no sslmode: the default "
            "(prefer) neither verifies the server nor insists on TLS. Add ?sslmode=verify-full (with "
            "sslrootcert=… if the CA is not the system's), or choose sslmode=require / disable knowingly")
