"""The analysis jobs end to end on small generated histories, in SQLite and PostgreSQL: baselines
match an independent computation over ``audit_iter``, the planted anomalies are the ones flagged,
reports render, and the drivers refuse bad input with exit status 2."""

from __future__ import annotations

import asyncio
import math
import subprocess
from collections import defaultdict
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest

from adapters.runtime.processes import ChildService
from adapters.store import open_store
from drivers import baselines, generate, recommend, report
from drivers.history_model import HistoryModel
from policies.analysis.baselines import SERVICE_KIND, USER_KIND, user_baselines
from policies.audit import schema
from protocol.errors import counts_against_service

END = "2024-03-01"
END_TS = 1709251200.0
DAYS = 5
ARGS = ["--events", "12000", "--days", str(DAYS), "--users", "40", "--services", "9", "--seed", "5",
        "--end", END, "--rollup-days", "1"]
BEHAVIOUR_RULES = {"unusual_api_volume", "unusual_service_access", "data_exfiltration_suspected"}
CHROMIUM = Path("/usr/bin/chromium")


def _pg_database(server: ChildService, name: str) -> str:
    async def create() -> None:
        con = await asyncpg.connect(server.url)
        try:
            await con.execute(f"DROP DATABASE IF EXISTS {name}")
            await con.execute(f"CREATE DATABASE {name}")
        finally:
            await con.close()

    asyncio.run(create())
    return server.url.rsplit("/", 1)[0] + f"/{name}"


def _json(path: str) -> Any:
    return orjson.loads(Path(path).read_bytes())


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def history(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, ray_session: None) -> dict[str, Any]:
    """A generated history with baselines, recommendations and both reports run over it."""
    tmp = tmp_path_factory.mktemp(f"analysis-{request.param}")
    if request.param == "sqlite":
        url = f"sqlite:///{tmp}/ops.db"
    else:
        url = _pg_database(request.getfixturevalue("postgres_server"), "analysis_test")
    out = str(tmp / "reports")
    assert generate.main(["--store", url, *ARGS]) == 0
    # Small partitions so the job really splits and combines.
    assert baselines.main(["--store", url, "--since", f"{DAYS}d", "--until", END, "--partition-rows", "3000",
                           "--quiet"]) == 0
    assert recommend.main(["--store", url, "--until", END, "--out", out, "--quiet"]) == 0
    for kind in ("gdpr", "security"):
        assert report.main([kind, "--store", url, "--from", "2024-02-29", "--to", END, "--out", out,
                            "--quiet"]) == 0
    return {"url": url, "out": Path(out)}


async def _stored(url: str) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
    async with open_store(url) as store:
        users = await store.baseline_latest(USER_KIND)
        services = await store.baseline_latest(SERVICE_KIND)
        events = [r.payload async for r in store.audit_iter(END_TS - DAYS * 86400, END_TS, batch=5000)]
    assert users is not None and services is not None
    return users.data, services.data, events


def test_baselines_match_an_independent_computation(history: dict[str, Any]) -> None:
    """Per-user hourly mean/std and records per day, per-service error rate and p95 agree with a
    plain loop over every audit event (quantiles within the sketch's 1 %)."""
    users, services, events = asyncio.run(_stored(history["url"]))
    hours = DAYS * 24
    per_user_hour: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    records: dict[str, int] = defaultdict(int)
    lat: dict[str, list[float]] = defaultdict(list)
    fails: dict[str, int] = defaultdict(int)
    for e in events:
        if e["kind"] == schema.CALL:
            per_user_hour[e["userId"]][int(e["ts"] // 3600)] += 1
            lat[e["service"]].append(e["durationMs"])
            fails[e["service"]] += counts_against_service(e["resultCode"])
        elif e["kind"] == schema.DATA_ACCESS:
            records[e["userId"]] += e["recordCount"]
    assert set(users["users"]) == set(per_user_hour)
    for user, by_hour in per_user_hour.items():
        counts = list(by_hour.values()) + [0] * (hours - len(by_hour))
        mean = sum(counts) / hours
        std = math.sqrt(sum((c - mean) ** 2 for c in counts) / hours)
        got = users["users"][user]
        assert got["requestsPerHour"] == pytest.approx(mean)
        assert got["requestsPerHourStd"] == pytest.approx(std)
        assert got["recordsPerDay"] == pytest.approx(records[user] / DAYS)
    for name, values in lat.items():
        got = services["services"][name]
        assert got["calls"] == len(values)
        assert got["errorRate"] == pytest.approx(fails[name] / len(values))
        s = sorted(values)
        assert got["latencyMs"]["p95"] == pytest.approx(s[math.floor(0.95 * (len(s) - 1))], rel=0.011)
    assert user_baselines(users)  # the security analyst can read what was written


def test_planted_anomalies_are_the_ones_flagged(history: dict[str, Any]) -> None:
    """The replayed detection rules flag exactly the planted users, each for its own anomaly, and
    the recommendations flag the planted services for latency, errors and concurrency."""
    planted = HistoryModel(events=12000, days=DAYS, users=40, services=9, seed=5, end=END_TS).planted
    sec = _json(str(history["out"] / "security-20240229-20240301.json"))
    flagged: dict[str, set[str]] = defaultdict(set)
    for a in sec["anomalies"]:
        if a["type"] in BEHAVIOUR_RULES:
            flagged[a["userId"]].add(a["type"])
    assert set(flagged) == {planted["volume_user"], planted["new_services_user"], planted["exfiltration_user"]}
    assert "unusual_api_volume" in flagged[planted["volume_user"]]
    assert "unusual_service_access" in flagged[planted["new_services_user"]]
    assert "data_exfiltration_suspected" in flagged[planted["exfiltration_user"]]
    brute = {a.get("ipAddress") for a in sec["anomalies"] if a["type"] == "brute_force_attempt"}
    assert planted["brute_force_ip"] in brute
    rec = _json(str(next(history["out"].glob("recommendations-*.json"))))
    by_rule: dict[str, set[str]] = defaultdict(set)
    for r in rec["recommendations"]:
        by_rule[r["rule"]].add(r["target"])
        assert r["evidence"], "every recommendation carries its evidence"
    assert by_rule["high_latency"] == {planted["latency_service"]}
    assert by_rule["high_error_rate"] == {planted["error_service"]}
    assert by_rule["high_concurrency"] == {planted["concurrency_service"]}
    assert "postgresql_cluster/primary" in by_rule["connections_near_max"]
    impacts = [r["impact"] for r in rec["recommendations"]]
    assert impacts == sorted(impacts, reverse=True)


def test_reports_render_in_three_formats(history: dict[str, Any]) -> None:
    """Each report exists as Markdown, self-contained HTML with SVG charts, and JSON."""
    for stem in ("gdpr-20240229-20240301", "security-20240229-20240301"):
        page = (history["out"] / f"{stem}.html").read_text()
        assert page.startswith("<!DOCTYPE html>") and "<script" not in page and "http://" not in page.replace(
            'xmlns="http://www.w3.org/2000/svg"', "")
        assert (history["out"] / f"{stem}.md").read_text().startswith("# ")
    gdpr = _json(str(history["out"] / "gdpr-20240229-20240301.json"))
    assert gdpr["processingActivities"] and gdpr["dataBreaches"] is not None
    assert any(v["type"] == "excessive_data_access" for v in gdpr["accessViolations"])
    rec_html = next(history["out"].glob("recommendations-*.html")).read_text()
    assert rec_html.count("<svg") >= 3


@pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is not installed (Debian package chromium)")
def test_html_reports_open_in_headless_chromium_without_console_errors(history: dict[str, Any]) -> None:
    """Headless Chromium loads every HTML report and logs no console error."""
    for page in sorted(history["out"].glob("*.html")):
        run = subprocess.run(
            [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0",
             "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stderr[-2000:]
        assert "<svg" in run.stdout or "recommendations" not in page.name
        console = [line for line in run.stderr.splitlines() if "CONSOLE" in line]
        assert not console, console


def test_generator_is_deterministic(tmp_path: Path) -> None:
    """The same seed and end write byte-identical audit chains."""
    heads = []
    for name in ("a", "b"):
        url = f"sqlite:///{tmp_path}/{name}.db"
        assert generate.main(["--store", url, "--events", "1500", "--days", "2", "--users", "20",
                              "--services", "8", "--end", END, "--rollup-days", "1", "--seed", "9"]) == 0

        async def head(u: str = url) -> list[str]:
            async with open_store(u) as store:
                return [r.hash async for r in store.audit_iter(batch=2000)][-3:]

        heads.append(asyncio.run(head()))
    assert heads[0] == heads[1]


@pytest.mark.parametrize("argv", [
    ["--store", "mysql://x/y"],
    ["--store", "postgresql://nobody@127.0.0.1:1/none"],
    ["--since", "soon"],
    ["--partition-rows", "0"],
])
def test_baselines_exit_2_on_bad_options_or_unreachable_store(argv: list[str]) -> None:
    """Bad options and an unreachable store stop the driver with status 2."""
    with pytest.raises(SystemExit) as exc:
        baselines.main(argv)
    assert exc.value.code == 2


def test_drivers_exit_2_on_an_empty_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An empty store is an error that names the fix, for every analysis driver."""
    url = f"sqlite:///{tmp_path}/empty.db"
    for main, argv in ((baselines.main, []), (recommend.main, []),
                       (report.main, ["gdpr", "--from", "2024-01-01", "--to", "2024-02-01"])):
        with pytest.raises(SystemExit) as exc:
            main([*argv, "--store", url])
        assert exc.value.code == 2
        assert "drivers.generate" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        report.main(["--store", url])  # no report kind named

