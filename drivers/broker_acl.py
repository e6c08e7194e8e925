"""``python -m drivers.broker_acl mosquitto|emqx --cluster-id C --services A,B --out DIR`` — the
broker's principals, credentials and ACLs, from ``policies.security.broker_acl``.

Writes under ``DIR``:

- ``credentials/{principal}`` — one random password per principal (mode 0600; kept when it already
  exists, so running again does not rotate them; ``--rotate`` draws new ones). Never printed.
- mosquitto: ``mosquitto/passwd`` (PBKDF2-SHA512, 0600), ``mosquitto/acl``, ``mosquitto/auth.conf``
  (the three lines to include in mosquitto.conf).
- emqx: ``emqx/acl.conf`` (file authorizer), ``emqx/rules_users.json`` and ``emqx/rules_all.json``
  (bodies for the built-in database API), ``emqx/authorization.conf`` (the settings they need).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from policies.security.broker_acl import DEFAULT_AUTH_PRINCIPAL, BrokerPolicy, build_policy
from policies.security.broker_acl_render import (
    MOSQUITTO_SALT_BYTES,
    emqx_builtin_rules,
    mosquitto_password_line,
    render_emqx_acl,
    render_mosquitto_acl,
)
from protocol.exceptions import ProtocolError

PROG = "python -m drivers.broker_acl"


def _write(path: Path, text: str, *, secret: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = 0o600 if secret else 0o644
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, mode)  # O_CREAT's mode is masked by umask; a reused tmp keeps its old mode
    os.replace(tmp, path)


def credentials(policy: BrokerPolicy, out: Path, *, rotate: bool = False) -> dict[str, str]:
    """Each principal's password from ``out/credentials/{name}``, drawn (and written 0600) if absent."""
    found: dict[str, str] = {}
    for p in policy.principals:
        path = out / "credentials" / p.name
        if path.exists() and not rotate:
            found[p.name] = path.read_text().strip()
        else:
            found[p.name] = secrets.token_urlsafe(32)
            _write(path, found[p.name] + "\n", secret=True)
    return found


@dataclass(frozen=True)
class BrokerLogins:
    """The principals' passwords, handed to processes through their environment (never argv)."""

    passwords: Mapping[str, str] = field(repr=False)

    def env(self, principal: str) -> dict[str, str]:
        """``SFA_OPS_MQTT_USERNAME``/``…_PASSWORD``, which ``MqttConfig.from_url`` reads."""
        return {"SFA_OPS_MQTT_USERNAME": principal, "SFA_OPS_MQTT_PASSWORD": self.passwords[principal]}

    def config(self, principal: str) -> dict[str, Any]:
        """``MqttConfig`` overrides for a bus in this process."""
        return {"username": principal, "password": self.passwords[principal]}


def write_mosquitto(policy: BrokerPolicy, out: Path, *, rotate: bool = False) -> list[Path]:
    creds = credentials(policy, out, rotate=rotate)
    d = out / "mosquitto"
    lines = [mosquitto_password_line(name, pw, secrets.token_bytes(MOSQUITTO_SALT_BYTES))
             for name, pw in creds.items()]
    _write(d / "passwd", "\n".join(lines) + "\n", secret=True)
    _write(d / "acl", render_mosquitto_acl(policy))
    _write(d / "auth.conf", "allow_anonymous false\n"
           f"password_file {(d / 'passwd').resolve()}\nacl_file {(d / 'acl').resolve()}\n")
    return [d / "passwd", d / "acl", d / "auth.conf"]


def write_emqx(policy: BrokerPolicy, out: Path, *, rotate: bool = False) -> list[Path]:
    credentials(policy, out, rotate=rotate)
    d = out / "emqx"
    rules = emqx_builtin_rules(policy)
    _write(d / "acl.conf", render_emqx_acl(policy))
    _write(d / "rules_users.json", json.dumps(rules["users"], indent=2) + "\n")
    _write(d / "rules_all.json", json.dumps(rules["all"], indent=2) + "\n")
    _write(d / "authorization.conf", _EMQX_AUTHZ)
    return [d / "acl.conf", d / "rules_users.json", d / "rules_all.json", d / "authorization.conf"]


_EMQX_AUTHZ = """\
# EMQX 5: deny what no rule allows. Use ONE of the two sources below.
authorization {
  no_match = deny
  deny_action = ignore
  sources = [
    # the generated file (copy emqx/acl.conf to etc/acl.conf on every node)
    {type = file, enable = true, path = "etc/acl.conf"}
    # or the built-in database, filled through the REST API with rules_users.json / rules_all.json:
    # {type = built_in_database, enable = true, max_rules = 100}
  ]
}
# Principals log in with the built-in database authenticator (password_based:built_in_database);
# create one user per file in credentials/ (POST /api/v5/authentication/password_based:built_in_database/users).
"""


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("broker", choices=("mosquitto", "emqx"))
    ap.add_argument("--cluster-id", required=True,
                    help="cluster id of the system/{cluster}/... topics; '+': a broker several clusters share")
    ap.add_argument("--services", default="", help="comma-separated service names (one principal each)")
    ap.add_argument("--auth-principal", default=DEFAULT_AUTH_PRINCIPAL,
                    help="username of the auth service, the only writer of security/auth/+")
    ap.add_argument("--out", required=True, type=Path, help="directory to write into")
    ap.add_argument("--rotate", action="store_true", help="draw new passwords even where some exist")
    a = ap.parse_args(argv)
    try:
        policy = build_policy(a.cluster_id, [s for s in a.services.split(",") if s], a.auth_principal)
    except (ValueError, ProtocolError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    writer = write_mosquitto if a.broker == "mosquitto" else write_emqx
    files = writer(policy, a.out, rotate=a.rotate)
    print(f"{PROG}: {len(policy.principals)} principal(s): {', '.join(p.name for p in policy.principals)}")
    print(f"{PROG}: credentials (0600) in {a.out / 'credentials'}; wrote {', '.join(str(f) for f in files)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
