"""The receiver registry: ``DELIVERERS`` (receiver type → :class:`~adapters.notify.base.Deliverer`),
read from the module that declares each type (its ``DELIVERER``, next to its delivery code), and
:func:`bind_receivers`, which checks a loaded alerting policy's receivers against it when the alert
manager (or ``operate`` at start-up) loads the policy.

A new receiver type is one module in this package and one line here (see docs/architecture.md).
"""

from __future__ import annotations

import importlib
from dataclasses import replace
from pathlib import Path

from adapters.notify.base import Deliverer
from policies.alerting.policy import AlertingPolicy, Integration, Receiver, load_alerting_policy
from policies.common.config import PolicyConfigError

__all__ = ["DELIVERERS", "bind_receivers", "kind_of", "load_checked_alerting_policy"]


def _declared(modules: dict[str, str]) -> dict[str, Deliverer]:
    """Each module's ``DELIVERER``; a module without one is a programming error, found at import."""
    out = {}
    for name, module in modules.items():
        kind = getattr(importlib.import_module(module), "DELIVERER", None)
        if not isinstance(kind, Deliverer):
            raise TypeError(f"receiver module {module} declares no DELIVERER = Deliverer(...)")
        out[name] = kind
    return out


#: Receiver type → its declaration; one line per type, naming the module that delivers it.
DELIVERERS: dict[str, Deliverer] = _declared({
    "mqtt": "adapters.notify.mqtt",
    "webhook": "adapters.notify.webhook",
    "alertmanager": "adapters.notify.alertmanager",
    "slack": "adapters.notify.slack",
    "pagerduty": "adapters.notify.pagerduty",
    "email": "adapters.notify.mail",
    "phone": "adapters.notify.phone",
    "log": "adapters.notify.log",
})

# Alertmanager's other integrations: accepted so an Alertmanager file loads (Alertmanager's
# send_resolved defaults), nothing delivers them — their notifications are skipped, logged once.
_UNDELIVERED = Deliverer(deliver=None)
_UNDELIVERED_RESOLVED_OFF = Deliverer(deliver=None, send_resolved=False)
_FOREIGN: dict[str, Deliverer] = {
    **dict.fromkeys(("opsgenie", "pushover", "victorops", "sns", "telegram", "discord", "webex", "msteams",
                     "msteamsv2", "jira", "incidentio", "mattermost"), _UNDELIVERED),
    **dict.fromkeys(("wechat", "rocketchat"), _UNDELIVERED_RESOLVED_OFF),
}


def kind_of(type_name: str) -> Deliverer | None:
    """The registered declaration of a receiver type, or ``None`` for a type nobody knows."""
    return DELIVERERS.get(type_name) or _FOREIGN.get(type_name)


def _bind(integ: Integration, source: str) -> Integration:
    kind = kind_of(integ.type)
    if kind is None:
        raise PolicyConfigError(
            f"{source}: {integ.where}: type {integ.type!r} is not one of {', '.join(DELIVERERS)} "
            "(as type: <name>, a mapping per type (slack: {…}), or Alertmanager's <name>_configs lists)"
        )
    settings = {**kind.defaults, **integ.settings}
    if kind.required and not any(settings.get(k) for k in kind.required):
        raise PolicyConfigError(
            f"{source}: {integ.where}: a {integ.type} integration needs {' or '.join(kind.required)}"
        )
    return replace(integ, settings=settings,
                   send_resolved=integ.send_resolved if integ.send_resolved_set else kind.send_resolved)


def bind_receivers(policy: AlertingPolicy) -> AlertingPolicy:
    """The policy with each integration checked against the registry (known type, required
    settings) and its type's defaults applied; raises ``PolicyConfigError`` naming the file, the
    receiver and the missing field."""
    receivers = {
        name: Receiver(name=name, integrations=tuple(_bind(i, policy.source) for i in rcv.integrations))
        for name, rcv in policy.receivers.items()
    }
    return replace(policy, receivers=receivers)


def load_checked_alerting_policy(overrides_dir: Path | str | None = None) -> AlertingPolicy:
    """``load_alerting_policy`` and :func:`bind_receivers`: what the alert manager delivers with."""
    return bind_receivers(load_alerting_policy(overrides_dir))
