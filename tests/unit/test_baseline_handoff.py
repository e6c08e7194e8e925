"""The security analyst reads the baselines the analysis job writes."""

from actors.security_analyst import parse_user_baselines


def test_analysis_baselines_use_typical_services() -> None:
    """A schema-1 document from drivers.baselines: the usual set is typicalServices, not every
    service the user ever touched; the older flat shape still reads."""
    doc = {"schema": 1, "window": {"start": 0.0, "end": 3600.0, "hours": 1},
           "users": {"u1": {"requestsPerHour": 4.0, "typicalServices": ["A"], "services": {"A": 9, "B": 1},
                            "recordsPerDay": 12.0}}}
    b = parse_user_baselines(doc)["u1"]
    assert b.services == frozenset({"A"}) and b.requests_per_hour == 4.0 and b.records_per_day == 12.0
    flat = parse_user_baselines({"users": {"u2": {"requestsPerHour": 1, "services": ["X"], "recordsPerDay": 0}}})
    assert flat["u2"].services == frozenset({"X"})
