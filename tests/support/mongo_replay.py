"""A MongoDB replica-set member replayed over the real wire protocol (mockupdb speaks OP_MSG to the
real driver) with documents shaped like MongoDB's documented output (tests/fixtures/mongodb,
provenance in its SOURCES.md). MongoDB itself cannot run on these machines.

Each member answers the driver's handshake (``ismaster``/``hello``), ``hello``, ``replSetGetStatus``
and ``serverStatus`` from its current documents, which a test swaps to script a failure (a lagging
secondary, a lost primary); ``stop()`` makes it unreachable (connections refused) and ``start()``
brings it back on the same port."""

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
        self.port: int | None = None
        self.server = self._server()

    def _server(self) -> MockupDB:
        server = MockupDB(port=self.port, auto_ismaster=False)
        for command in ("ismaster", "isMaster", "hello"):
            server.autoresponds(command, lambda r: r.replies(self.docs["hello"]))
        server.autoresponds("replSetGetStatus", lambda r: r.replies(self.docs["replSetGetStatus"]))
        server.autoresponds("serverStatus", lambda r: r.replies(self.docs["serverStatus"]))
        return server

    def set(self, *, hello: str | None = None, status: str | None = None, server_status: str | None = None) -> None:
        if hello:
            self.docs["hello"] = fixture(hello)
        if status:
            self.docs["replSetGetStatus"] = fixture(status)
        if server_status:
            self.docs["serverStatus"] = fixture(server_status)

    def start(self) -> str:
        """Listen on a free loopback port (the same one again after a stop); the URI checks this one
        member directly."""
        if self.port is not None:  # a restart: a stopped MockupDB cannot run again
            self.server = self._server()
        self.port = self.server.run()
        return f"mongodb://127.0.0.1:{self.port}/?directConnection=true"

    def stop(self) -> None:
        self.server.stop()
