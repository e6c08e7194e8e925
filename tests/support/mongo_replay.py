"""A MongoDB replica-set member replayed over the real wire protocol (mockupdb speaks OP_MSG to the
real driver) with documents shaped like MongoDB's documented output (tests/fixtures/mongodb,
provenance in its SOURCES.md). MongoDB itself cannot run on these machines.

Each member answers the driver's handshake (``ismaster``/``hello``), ``hello``, ``replSetGetStatus``
and ``serverStatus`` from its current documents, which a test swaps to script a failure (a lagging
secondary, a lost primary); ``stop()`` makes it unreachable (connections refused)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bson import json_util
from mockupdb import MockupDB

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "mongodb"


def fixture(name: str) -> dict[str, Any]:
    """A fixture document with BSON types (dates, timestamps, int64) as a server sends them."""
    doc: dict[str, Any] = json_util.loads((FIXTURES / name).read_text())
    return doc


class ReplayedMember:
    """One member: ``docs`` maps command name → the document it answers with now."""

    def __init__(self, *, hello: str, status: str, server_status: str = "serverStatus.json") -> None:
        self.docs: dict[str, dict[str, Any]] = {}
        self.set(hello=hello, status=status, server_status=server_status)
        self.server = MockupDB(auto_ismaster=False)
        for command in ("ismaster", "isMaster", "hello"):
            self.server.autoresponds(command, lambda r: r.replies(self.docs["hello"]))
        self.server.autoresponds("replSetGetStatus", lambda r: r.replies(self.docs["replSetGetStatus"]))
        self.server.autoresponds("serverStatus", lambda r: r.replies(self.docs["serverStatus"]))
        self.commands: list[str] = []

    def set(self, *, hello: str | None = None, status: str | None = None, server_status: str | None = None) -> None:
        if hello:
            self.docs["hello"] = fixture(hello)
        if status:
            self.docs["replSetGetStatus"] = fixture(status)
        if server_status:
            self.docs["serverStatus"] = fixture(server_status)

    def start(self) -> str:
        """Listen on a free loopback port; the URI checks this one member directly."""
        self.server.run()
        return f"mongodb://{self.server.address_string}/?directConnection=true"

    def stop(self) -> None:
        self.server.stop()
