"""Parsing the security analyst's hot inputs without a model: a login attempt
(``security/auth/+``) and the role lists of a service's ``role_change`` report. Pure; malformed
input gives None (the analyst counts it)."""

from __future__ import annotations

from typing import Any

import orjson

from policies.security.events import AuthEvent

ID_MAX = 256
"""Longest user id (and ``changedBy``) accepted."""
_IP_MAX = 64
_UA_MAX = 512
_MAX_ROLES = 256


def parse_roles(value: Any) -> frozenset[str] | None:
    """A role list from a service's report: a list of at most ``_MAX_ROLES`` strings, else None."""
    if value is None:
        return frozenset()
    if type(value) is not list or len(value) > _MAX_ROLES or any(type(r) is not str for r in value):
        return None
    return frozenset(value)


def parse_auth(payload: bytes) -> AuthEvent | None:
    """Fast path for the hot topic: plain dict checks, no model (None when malformed)."""
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    if type(doc) is not dict:
        return None
    success = doc.get("success")
    uid = doc.get("userId")
    ip = doc.get("ipAddress")
    if type(success) is not bool:
        return None
    if uid is not None and (type(uid) is not str or not uid or len(uid) > ID_MAX):
        return None
    if ip is not None and (type(ip) is not str or not ip or len(ip) > _IP_MAX):
        return None
    if uid is None and ip is None:
        return None
    ua = doc.get("userAgent")
    if ua is not None and (type(ua) is not str or len(ua) > _UA_MAX):
        return None
    return AuthEvent(user_id=uid, ip_address=ip, success=success, timestamp=0.0, user_agent=ua)
