"""Receivers: named lists of integrations (where a notification goes), from three config forms.

The policy only decides *who* gets *what* and *when*; delivering is the AlertManager actor's job.
A receiver is read from any of these forms (they may be mixed within one receiver):

- sfa-ops: ``{name: ops, type: webhook, url: http://…, send_resolved: true}`` (one integration);
- the seed's: ``{name: oncall, pagerduty: {service_key: …}, slack: {channel: '#incidents'}}``;
- Alertmanager's: ``{name: oncall, webhook_configs: [{url: …}], slack_configs: [{channel: …}]}``.

A receiver with no integration is valid (Alertmanager's "null" receiver: it swallows alerts).
``send_resolved`` defaults follow Alertmanager (on for webhook and PagerDuty, off for Slack and
email); sfa-ops' own types (mqtt, alertmanager, log) default to on, ``phone`` to off.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["INTEGRATION_TYPES", "Integration", "Receiver", "parse_receiver"]

#: Types sfa-ops knows (mqtt, webhook, alertmanager, log are delivered by sfa-ops itself).
INTEGRATION_TYPES = ("mqtt", "webhook", "alertmanager", "slack", "pagerduty", "email", "log", "phone")

# Other Alertmanager integrations: accepted so an Alertmanager file loads; nothing delivers them yet.
_FOREIGN_TYPES = (
    "opsgenie", "wechat", "pushover", "victorops", "sns", "telegram", "discord", "webex",
    "msteams", "msteamsv2", "jira", "rocketchat", "incidentio", "mattermost",
)  # fmt: skip

_SEND_RESOLVED_OFF = {"slack", "email", "wechat", "rocketchat", "phone"}

# Settings an integration cannot work without (any one of each tuple suffices).
_REQUIRED: dict[str, tuple[str, ...]] = {
    "webhook": ("url", "url_file"),
    "alertmanager": ("url",),
    "pagerduty": ("routing_key", "service_key", "routing_key_file", "service_key_file"),
    "email": ("to",),
    "phone": ("numbers",),
}

#: Default MQTT topic; the actor fills in ``{cluster}`` (DESIGN.md §1: system/{cluster}/alerts).
DEFAULT_MQTT_TOPIC = "system/{cluster}/alerts"


@dataclass(frozen=True, kw_only=True)
class Integration:
    """One delivery target of a receiver; ``settings`` are passed through untouched."""

    type: str
    settings: Mapping[str, Any]
    send_resolved: bool


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
    if kind == "mqtt":
        settings.setdefault("topic", DEFAULT_MQTT_TOPIC)
    needed = _REQUIRED.get(kind)
    if needed and not any(settings.get(k) for k in needed):
        raise ValueError(f"{where}: a {kind} integration needs {' or '.join(needed)}")
    flag = settings.pop("send_resolved", None)
    if flag is not None and not isinstance(flag, bool):
        raise ValueError(f"{where}: send_resolved must be true or false, got {flag!r}")
    return Integration(
        type=kind,
        settings=settings,
        send_resolved=(kind not in _SEND_RESOLVED_OFF) if flag is None else flag,
    )


def parse_receiver(raw: Any, where: str) -> Receiver:
    """Normalise one ``receivers`` entry; ``where`` (``receivers[2]``) prefixes error messages."""
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where}: a receiver must be a mapping with a name, got {raw!r}")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise ValueError(f"{where}: every receiver needs a name")
    where = f"{where} ({name})"
    known = INTEGRATION_TYPES + _FOREIGN_TYPES
    out: list[Integration] = []
    if "type" in raw:
        kind = raw["type"]
        if kind not in known:
            raise ValueError(f"{where}: type {kind!r} is not one of {', '.join(INTEGRATION_TYPES)}")
        settings = {k: v for k, v in raw.items() if k not in ("name", "type")}
        return Receiver(name=name, integrations=(_integration(kind, settings, where),))
    for key, value in raw.items():
        if key == "name":
            continue
        kind = key.removesuffix("_configs")
        if kind not in known:
            raise ValueError(
                f"{where}: unknown key {key!r}; use type: one of {', '.join(INTEGRATION_TYPES)}, "
                "a mapping per type (slack: {…}), or Alertmanager's *_configs lists"
            )
        if key.endswith("_configs") and not isinstance(value, list):
            raise ValueError(f"{where}: {key} must be a list of mappings")
        items = value if isinstance(value, list) else [value]
        for j, item in enumerate(items):
            out.append(
                _integration(kind, item, f"{where}.{key}[{j}]" if len(items) > 1 else f"{where}.{key}")
            )
    return Receiver(name=name, integrations=tuple(out))
