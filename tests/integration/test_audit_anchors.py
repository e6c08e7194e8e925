"""Audit anchors on real SQLite and PostgreSQL and the session mosquitto: the audit writer publishes
signed, retained anchors and appends them to the anchor file, periodically and at shutdown; and
``drivers.audit verify --anchors`` catches what the chain alone cannot (the tail cut with the head
moved back, a cut tail refilled, the whole log deleted), with no false alarm after a retention
purge."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import orjson
import pytest

from actors.audit_writer import AuditWriterBody
from actors.security_common import SecurityOptions
from actors.settings import OperateSettings
from adapters.mqtt.signing import ensure_key_pair, public_key_path
from adapters.store import open_store
from adapters.store.audit_anchor_file import append_anchor, read_anchors
from drivers import audit as audit_cli
from policies.audit.anchors import build_anchor
from protocol import topics
from protocol.contract import parse_published
from protocol.system import AuditAnchor
from sdk.trust import SystemTrust
from tests.integration.test_audit_hmac import KEY, append, rehash_after_edit, sql
from tests.integration.test_audit_hmac import store_url as store_url
from tests.support.mqtt import Collector, running_bus, wait_until

pytestmark = pytest.mark.integration


async def anchor_now(url: str, path: Path) -> None:
    """Take an anchor with the writer's own functions (store heads → model → file line)."""
    async with open_store(url, audit_key=KEY) as store:
        append_anchor(path, build_anchor(await store.audit_heads(), "c1", time.time()))


async def cli(url: str, tmp_path: Path, anchors: Path | None, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    key_file = tmp_path / "audit.key"
    key_file.write_text(KEY.decode() + "\n")
    argv = ["--store", url, "--audit-key-file", str(key_file), "verify"]
    code = await audit_cli.run(argv + (["--anchors", str(anchors)] if anchors else []))
    captured = capsys.readouterr()
    return code, captured.out + captured.err


async def cut_tail(url: str, keep_id: int) -> None:
    """Delete the rows after ``keep_id`` and move the head back to it: a self-consistent chain."""
    [row] = await sql(url, "SELECT chain, hash FROM audit_events WHERE id = $1", keep_id)
    await sql(url, "DELETE FROM audit_events WHERE id > $1", keep_id)
    await sql(url, "UPDATE audit_chain SET head_id = $1, head_hash = $2 WHERE chain = $3",
              keep_id, row["hash"], row["chain"])


async def test_intact_and_grown_chains_verify_against_their_anchors(
        store_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    anchors = tmp_path / "anchors.jsonl"
    await append(store_url, 5, KEY)
    await anchor_now(store_url, anchors)
    await append(store_url, 3, KEY, start=5)  # written after the last anchor: fine
    code, out = await cli(store_url, tmp_path, anchors, capsys)
    assert code == 0 and "ok: 8 audit events verified, and against 1 anchor(s) of 1 chain(s)" in out, out


async def test_tail_truncation_with_the_head_moved_back_is_caught(
        store_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Rows 4-6 removed and the head moved to row 3: the chain alone verifies; the anchors do not."""
    anchors = tmp_path / "anchors.jsonl"
    await append(store_url, 6, KEY)
    await anchor_now(store_url, anchors)
    await cut_tail(store_url, 3)
    assert (await cli(store_url, tmp_path, None, capsys))[0] == 0  # what the chain alone cannot see
    code, out = await cli(store_url, tmp_path, anchors, capsys)
    assert code == 1, out
    assert "BROKEN against the anchors: chain 'default' holds 3 rows but the anchor of" in out
    assert "recorded 6 (tail truncated)" in out


async def test_cut_tail_refilled_to_the_same_count_is_caught(
        store_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The tail cut and as many rows appended again (validly keyed, by operate itself): the count
    matches, but the anchored head row is gone."""
    anchors = tmp_path / "anchors.jsonl"
    await append(store_url, 6, KEY)
    await anchor_now(store_url, anchors)
    await cut_tail(store_url, 3)
    await append(store_url, 3, KEY, start=100)
    code, out = await cli(store_url, tmp_path, anchors, capsys)
    assert code == 1 and "recorded row 6 as its head (6 rows); that row is gone" in out, out


async def test_whole_deletion_is_caught(
        store_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    anchors = tmp_path / "anchors.jsonl"
    await append(store_url, 4, KEY)
    await anchor_now(store_url, anchors)
    await sql(store_url, "DELETE FROM audit_events")
    await sql(store_url, "DELETE FROM audit_chain")
    assert (await cli(store_url, tmp_path, None, capsys))[0] == 0  # an empty log verifies on its own
    code, out = await cli(store_url, tmp_path, anchors, capsys)
    assert code == 1, out
    assert "the audit log is empty but anchors recorded 4 rows in 1 chain(s) (whole deletion)" in out


async def test_edit_rehashed_is_caught_with_the_anchors_given(
        store_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    anchors = tmp_path / "anchors.jsonl"
    await append(store_url, 5, KEY)
    await anchor_now(store_url, anchors)
    await rehash_after_edit(store_url, 3, None)
    code, out = await cli(store_url, tmp_path, anchors, capsys)
    assert code == 1 and "BROKEN at row 3" in out, out


async def test_retention_purge_is_no_false_alarm(
        store_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Anchors taken before and after a purge that removed rows an anchor named as its head."""
    anchors = tmp_path / "anchors.jsonl"
    await append(store_url, 4, KEY)
    await anchor_now(store_url, anchors)
    await append(store_url, 4, KEY, start=4)
    async with open_store(store_url, audit_key=KEY) as store:
        assert await store.audit_purge(1006.0) == 6  # rows ts 1000..1005
    await anchor_now(store_url, anchors)
    code, out = await cli(store_url, tmp_path, anchors, capsys)
    assert code == 0 and "against 2 anchor(s)" in out, out


async def test_anchor_file_problems(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A missing anchor file is an error (exit 2); lines that are not anchors are counted, ignored."""
    url = f"sqlite:///{tmp_path}/ops.db"
    await append(url, 2, KEY)
    code, out = await cli(url, tmp_path, tmp_path / "missing.jsonl", capsys)
    assert code == 2 and "anchor file" in out and "No such file" in out
    anchors = tmp_path / "anchors.jsonl"
    anchors.write_bytes(b'not json\n{"type": "audit_anchor"}\n' + b"x" * 300_000 + b"\n\n")
    await anchor_now(url, anchors)
    assert read_anchors(anchors).malformed == 3
    code, out = await cli(url, tmp_path, anchors, capsys)
    assert code == 0 and "3 line(s)" in out and "against 1 anchor(s)" in out, out


async def test_audit_writer_publishes_signed_anchors_and_appends_them(broker_url: str, tmp_path: Path) -> None:
    """The writer (in-process body, real mosquitto and SQLite, a signing key): periodic anchors go
    to the file and, retained and signed, to system/{c}/audit/anchor; the one at shutdown counts
    every row written; the file then verifies the store with drivers.audit."""
    cluster = f"c{uuid.uuid4().hex[:8]}"
    key = tmp_path / "signing.key"
    ensure_key_pair(key)
    anchors, url = tmp_path / "var" / "anchors.jsonl", f"sqlite:///{tmp_path}/ops.db"
    settings = OperateSettings(broker_url=broker_url, cluster_id=cluster, store_url=url, audit_key=KEY.decode(),
                               signing_key_file=str(key), audit_anchor_file=str(anchors), audit_anchor_s=0.2)
    body = AuditWriterBody(settings, SecurityOptions(audit_flush_s=0.05))
    topic = topics.audit_anchor(cluster)
    try:
        await body.start()
        await body.calls([{"ts": time.time(), "service": "Svc", "method": "m", "params": {}}] * 3)
        await wait_until(lambda: anchors.exists() and b'"rows":3' in anchors.read_bytes(), timeout=10)
        written, published = anchors.read_bytes(), body.trail.counts["anchors"]
        await wait_until(lambda: body.trail.counts["anchors"] >= published + 2, timeout=10)
        assert anchors.read_bytes() == written  # nothing new: published again, not appended again
        await body.calls([{"ts": time.time(), "service": "Svc", "method": "m", "params": {}}] * 2)
    finally:
        await body.stop()
    lines = anchors.read_bytes().splitlines()
    last = AuditAnchor.model_validate_json(lines[-1])
    assert last.rows == 5 and last.cluster_id == cluster and [c.count for c in last.chains] == [5]
    rows = [AuditAnchor.model_validate_json(line).rows for line in lines]
    assert rows[-2:] == [3, 5] and rows == sorted(set(rows)), rows  # (an empty first anchor may precede)
    trust = SystemTrust.from_files(public_key_path(key))
    retained = Collector()
    async with running_bus(broker_url) as bus:
        await bus.subscribe(topic, retained, qos=1)
        [msg] = await retained.wait_for(1)
        assert trust.check(msg) == "trusted"
        assert parse_published(msg.topic, msg.payload) == last
        assert orjson.loads(msg.payload) == orjson.loads(lines[-1])
        await bus.publish(topic, b"", qos=1, retain=True)  # clear the retained anchor
    key_file = tmp_path / "audit.key"
    key_file.write_text(KEY.decode())
    assert await audit_cli.run(["--store", url, "--audit-key-file", str(key_file), "verify",
                                "--anchors", str(anchors)]) == 0
