"""Receivers: named lists of integrations (where a notification goes), from three config forms.

The policy only decides *who* gets *what* and *when*; delivering is the AlertManager actor's job.
A receiver is read from any of these forms (they may be mixed within one receiver):

- sfa-ops: ``{name: ops, type: webhook, url: http://…, send_resolved: true}`` (one integration);
- the seed's: ``{name: oncall, pagerduty: {service_key: …}, slack: {channel: '#incidents'}}``;
- Alertmanager's: ``{name: oncall, webhook_configs: [{url: …}], slack_configs: [{channel: …}]}``.

A receiver with no integration is valid (Alertmanager's "null" receiver: it swallows alerts).

This module checks the *shape* only: a bounded type name, a settings mapping, a boolean
``send_resolved``. Which types exist, the settings each needs and whether ``send_resolved`` defaults
off are declared by each receiver's module next to its delivery code (``adapters/notify/``); the
alert manager checks the parsed receivers against that registry when it loads its policy, before
any alert (``adapters.notify.registry.bind_receivers``). Until then an integration without an
explicit ``send_resolved`` counts as wanting resolved alerts.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["MAX_INTEGRATIONS", "Integration", "Receiver", "parse_receiver"]

#: An integration type name: lower-case, as Alertmanager's (``webhook``, ``pagerduty``, ``msteamsv2``).
_TYPE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
#: Integrations in one receiver (Alertmanager sets no limit; a receiver with more is a config error).
MAX_INTEGRATIONS = 64


@dataclass(frozen=True, kw_only=True)
class Integration:
    """One delivery target of a receiver; ``settings`` are passed through untouched.

    ``send_resolved_set`` says whether the config gave ``send_resolved`` (else the receiver type's
    default applies when the registry binds it); ``where`` names its place in the config for errors.
    """

    type: str
    settings: Mapping[str, Any]
    send_resolved: bool
    send_resolved_set: bool = field(default=True, compare=False)
    where: str = field(default="", compare=False)


@dataclass(frozen=True, kw_only=True)
class Receiver:
    """A named set of integrations."""

    name: str
    integrations: tuple[Integration, ...] = ()

    @property
    def send_resolved(self) -> bool:
        """Whether any integration wants resolved alerts (the notification log tracks this)."""
        return any(i.send_resolved for i in self.integrations)


def _integration(kind: str, raw: Any, where: str) -> Integration:
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where}: {kind} settings must be a mapping, got {raw!r}")
    settings = dict(raw)
    flag = settings.pop("send_resolved", None)
    if flag is not None and not isinstance(flag, bool):
        raise ValueError(f"{where}: send_resolved must be true or false, got {flag!r}")
    return Integration(type=kind, settings=settings, send_resolved=True if flag is None else flag,
                       send_resolved_set=flag is not None, where=where)


def _type_name(kind: Any, where: str, label: str, shown: Any) -> str:
    if not isinstance(kind, str) or not _TYPE_NAME.match(kind):
        raise ValueError(
            f"{where}: {label} {str(shown)[:64]!r} is not an integration type (lower-case letters, digits, _; "
            "at most 32); use type: <name>, a mapping per type (slack: {…}), or Alertmanager's *_configs lists"
        )
    return kind


def parse_receiver(raw: Any, where: str) -> Receiver:
    """Normalise one ``receivers`` entry; ``where`` (``receivers[2]``) prefixes error messages."""
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where}: a receiver must be a mapping with a name, got {raw!r}")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise ValueError(f"{where}: every receiver needs a name")
    where = f"{where} ({name})"
    if "type" in raw:
        kind = _type_name(raw["type"], where, "type", raw["type"])
        settings = {k: v for k, v in raw.items() if k not in ("name", "type")}
        return Receiver(name=name, integrations=(_integration(kind, settings, where),))
    out: list[Integration] = []
    for key, value in raw.items():
        if key == "name":
            continue
        kind = _type_name(key.removesuffix("_configs") if isinstance(key, str) else key, where, "key", key)
        if key.endswith("_configs") and not isinstance(value, list):
            raise ValueError(f"{where}: {key} must be a list of mappings")
        items = value if isinstance(value, list) else [value]
        if len(out) + len(items) > MAX_INTEGRATIONS:
            raise ValueError(f"{where}: more than {MAX_INTEGRATIONS} integrations in one receiver")
        for j, item in enumerate(items):
            out.append(
                _integration(kind, item, f"{where}.{key}[{j}]" if len(items) > 1 else f"{where}.{key}")
            )
    return Receiver(name=name, integrations=tuple(out))
