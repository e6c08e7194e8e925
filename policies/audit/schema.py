"""The audit log's event schema: the kinds and field names the live audit writer records
(``policies.audit.events``) and the analysis jobs read (``drivers.analysis_tasks``,
``drivers.report_sections``, ``policies.security.replay``). ``drivers.generate`` writes the same
shape with a subset of the fields (no parameters, no compliance block): the live writer is the
truth, the generator its synthetic stand-in. Pure constants.

Every event is a JSON object with ``ts`` (epoch seconds), ``kind`` and ``retention`` (its chain);
the rest is camelCase, as the seed's ``AuditEvent``. ``FIELDS[kind]`` is every key an event of
that kind may carry; ``REQUIRED[kind]`` the keys the readers need.
"""

from __future__ import annotations

from typing import Final

# -- kinds --------------------------------------------------------------------------------------

CALL: Final = "service_call"
"""An observed service-function call (seed: ``LogServiceFunctionCall``)."""
DATA_ACCESS: Final = "data_access"
"""A data access a service reported on ``audit/{Service}/data-access`` (seed: ``LogDataAccess``)."""
AUTH: Final = "auth"
"""An authentication attempt from ``security/auth/{event}``."""
AUTHZ: Final = "authz"
"""An authorization decision from ``security/authz/{event}``."""
DATA_SUBJECT_REQUEST: Final = "data_subject_request"
"""A GDPR data-subject request from ``audit/{Service}/data-subject`` (``policies.compliance.data_subject``):
one event when received, one when completed or rejected (``requestId`` ties them; the final one
carries ``daysToComplete``). ``drivers.generate`` writes one row per request, in its final state."""
COMPLIANCE_VIOLATION: Final = "compliance_violation"
AUDIT_PURGE: Final = "audit_purge"
AUDIT_LOSS: Final = "audit_loss"

# -- field names ----------------------------------------------------------------------------------

TS: Final = "ts"
KIND: Final = "kind"
RETENTION: Final = "retention"
EVENT_TYPE: Final = "eventType"
USER_ID: Final = "userId"
SERVICE: Final = "service"
METHOD: Final = "method"
SESSION_ID: Final = "sessionId"
CORRELATION_ID: Final = "correlationId"
IP_ADDRESS: Final = "ipAddress"
USER_AGENT: Final = "userAgent"
PARAMETERS: Final = "parameters"
RESULT: Final = "result"
SUCCESS: Final = "success"
RESULT_CODE: Final = "resultCode"
"""The JSON-RPC error code of the answer; null for a success; ``policies.breaker.outcomes.UNANSWERED`` for a
call that got no answer within its timeout."""
DURATION_MS: Final = "durationMs"
PAYLOAD_BYTES: Final = "payloadBytes"
"""Size of the call's ``params`` as JSON, in bytes."""
COMPLIANCE: Final = "compliance"
ROLES: Final = "roles"
COLLECTION: Final = "collection"
OPERATION: Final = "operation"
RECORD_COUNT: Final = "recordCount"
RECORD_IDS: Final = "recordIds"
ALLOWED: Final = "allowed"
REASON: Final = "reason"
REQUEST_TYPE: Final = "requestType"
STATUS: Final = "status"
DAYS_TO_COMPLETE: Final = "daysToComplete"
REQUEST_ID: Final = "requestId"
ENHANCED_LOGGING: Final = "enhancedLogging"
"""Whether a call was recorded under the ``enhanced_logging`` response action (larger size caps)."""

_COMMON = frozenset({TS, KIND, RETENTION, EVENT_TYPE})

FIELDS: Final[dict[str, frozenset[str]]] = {
    CALL: _COMMON | {SERVICE, METHOD, USER_ID, SESSION_ID, CORRELATION_ID, IP_ADDRESS, USER_AGENT, PARAMETERS,
                     RESULT, SUCCESS, RESULT_CODE, DURATION_MS, PAYLOAD_BYTES, COMPLIANCE, ENHANCED_LOGGING},
    DATA_ACCESS: _COMMON | {SERVICE, USER_ID, ROLES, COLLECTION, OPERATION, RECORD_COUNT, RECORD_IDS, COMPLIANCE},
    AUTH: _COMMON | {USER_ID, IP_ADDRESS, SUCCESS, METHOD, USER_AGENT, REASON},
    AUTHZ: _COMMON | {USER_ID, SERVICE, METHOD, ALLOWED, ROLES, IP_ADDRESS},
    DATA_SUBJECT_REQUEST: _COMMON | {USER_ID, REQUEST_TYPE, STATUS, DAYS_TO_COMPLETE, REQUEST_ID, SERVICE, REASON},
}
"""Every key an event of each analysed kind may carry."""

REQUIRED: Final[dict[str, frozenset[str]]] = {
    CALL: frozenset({TS, KIND, SERVICE, METHOD, USER_ID, SUCCESS, RESULT_CODE, DURATION_MS, PAYLOAD_BYTES}),
    DATA_ACCESS: frozenset({TS, KIND, SERVICE, USER_ID, ROLES, COLLECTION, OPERATION, RECORD_COUNT}),
    AUTH: frozenset({TS, KIND, USER_ID, IP_ADDRESS, SUCCESS}),
    AUTHZ: frozenset({TS, KIND, USER_ID, SERVICE, METHOD, ALLOWED}),
    DATA_SUBJECT_REQUEST: frozenset({TS, KIND, USER_ID, REQUEST_TYPE, STATUS, DAYS_TO_COMPLETE, REQUEST_ID}),
}
"""The keys the analysis jobs read, per kind: both the writer and the generator fill them."""
