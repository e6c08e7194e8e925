"""The error-code table of DESIGN.md §1."""

import pytest

from protocol.errors import ERROR_SPECS, counts_against_service, spec_for, tier_of


@pytest.mark.parametrize(
    ("code", "error_type", "counts"),
    [
        (-32001, "ValidationError", False),
        (-32002, "BusinessLogicError", False),
        (-32003, "AuthorizationError", False),
        (-32004, "ResourceNotFound", False),
        (-32005, "ConflictError", False),
        (-32006, "RateLimitError", False),
        (-32007, "TimeoutError", True),
        (-32603, "InternalError", True),
    ],
)
def test_tier1_table(code: int, error_type: str, counts: bool) -> None:
    """Each tier-1 code has the design's errorType and health flag."""
    assert ERROR_SPECS[code].error_type == error_type
    assert tier_of(code) == 1
    assert counts_against_service(code) is counts


def test_service_unavailable_is_tier2_and_never_feeds_back() -> None:
    """-32503 is sfa-ops' own answer: tier 2, not counted against the service again."""
    assert tier_of(-32503) == 2
    assert counts_against_service(-32503) is False


def test_success_and_unknown_codes() -> None:
    """A success never counts; an unknown server code counts like an internal error."""
    assert counts_against_service(None) is False
    assert spec_for(-32099).counts_against_service is True
