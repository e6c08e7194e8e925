"""The audit anchor file: one ``AuditAnchor`` JSON object per line, appended (see
``policies.audit.anchors``). Keep it off the database host, or ship it elsewhere: it is what
shows a truncated or deleted chain.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from policies.audit.anchors import strongest
from protocol import parse_model
from protocol.system import AuditAnchor, AuditChainAnchor

MAX_LINE_BYTES = 256 * 1024
"""Longer lines are not anchors (a full anchor of 256 chains is ~70 KB); they count as malformed."""


def append_anchor(path: str | Path, anchor: AuditAnchor) -> None:
    """Append one line and flush it to disk (the parent directory is created, the file is 0600)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(p, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, anchor.to_json() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class AnchorFile:
    """What a read of the anchor file found: the strongest anchor per chain, and line counts."""

    anchored: dict[str, tuple[AuditChainAnchor, float]] = field(default_factory=dict)
    anchors: int = 0
    malformed: int = 0


def read_anchors(path: str | Path) -> AnchorFile:
    """Read every line (streamed, each at most ``MAX_LINE_BYTES``); raises OSError if unreadable."""
    found = AnchorFile()
    with open(path, "rb") as f:
        while True:
            line = f.readline(MAX_LINE_BYTES + 1)
            if not line:
                return found
            if len(line) > MAX_LINE_BYTES:
                found.malformed += 1
                while line and not line.endswith(b"\n"):  # skip the rest of the long line
                    line = f.readline(MAX_LINE_BYTES)
                continue
            if not line.strip():
                continue
            try:
                anchor = parse_model(AuditAnchor, line)
            except (ValidationError, ValueError):
                found.malformed += 1
                continue
            found.anchors += 1
            found.anchored = strongest(found.anchored, anchor)
