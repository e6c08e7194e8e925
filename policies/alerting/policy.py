"""Alert routing policy of sfa-ops: one import for the AlertManager actor and the drivers.

The pieces (each its own module):

- ``alert_config``: the policy file (Alertmanager's format plus the seed's) → :class:`AlertingPolicy`;
- ``alert_matchers``, ``time_intervals``: matchers and time intervals, as Alertmanager defines them;
- ``alert_routing``: the immutable tree (``Route.match``) and inhibition;
- ``alert_receivers``: receivers in sfa-ops', the seed's and Alertmanager's forms;
- ``alert_groups``: the :class:`Dispatcher` state machine (groups, silences, notification log);
- ``alert_nflog``: when a group is told again; ``alert_payloads``: webhook and API v2 shapes.

Errors: configuration problems raise ``policies.common.config.PolicyConfigError`` (a ``ValueError``);
malformed alerts, silences and matchers raise ``ValueError`` (``MatcherSyntaxError`` for matchers).
"""

from __future__ import annotations

from policies.alerting.config import alerting_policy_from_text, load_alerting_policy
from policies.alerting.groups import Dispatcher
from policies.alerting.matchers import MatcherSyntaxError, parse_matchers
from policies.alerting.model import (
    SEVERITIES,
    Alert,
    Silence,
    fingerprint,
    format_time,
    parse_time,
)
from policies.alerting.nflog import NotifyReason
from policies.alerting.notification import DispatchStatus, IngestResult, Notification
from policies.alerting.payloads import to_api_v2_alerts, to_webhook_payload
from policies.alerting.receivers import Integration, Receiver
from policies.alerting.routing import AlertingPolicy, Route

__all__ = [
    "SEVERITIES",
    "Alert",
    "AlertingPolicy",
    "DispatchStatus",
    "Dispatcher",
    "IngestResult",
    "Integration",
    "MatcherSyntaxError",
    "Notification",
    "NotifyReason",
    "Receiver",
    "Route",
    "Silence",
    "alerting_policy_from_text",
    "fingerprint",
    "format_time",
    "load_alerting_policy",
    "parse_matchers",
    "parse_time",
    "to_api_v2_alerts",
    "to_webhook_payload",
]
