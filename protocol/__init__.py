"""Wire models, topics and error codes of sfa-ops (no I/O)."""

from protocol.base import (
    MAX_DEPTH,
    MAX_PAYLOAD_BYTES,
    Timestamp,
    WireModel,
    epoch_from_rfc3339,
    loads,
    parse_model,
    parse_rfc3339,
    rfc3339,
    rfc3339_from_epoch,
)
from protocol.errors import ERROR_SPECS, ErrorCode, counts_against_service, spec_for, tier_of
from protocol.exceptions import ProtocolError

__all__ = [
    "ERROR_SPECS",
    "MAX_DEPTH",
    "MAX_PAYLOAD_BYTES",
    "ErrorCode",
    "ProtocolError",
    "Timestamp",
    "WireModel",
    "counts_against_service",
    "epoch_from_rfc3339",
    "loads",
    "parse_model",
    "parse_rfc3339",
    "rfc3339",
    "rfc3339_from_epoch",
    "spec_for",
    "tier_of",
]
