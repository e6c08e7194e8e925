"""Reads the JSON examples out of the seed design document's text (not from copies).

The seed is a PDF's text: each example follows a line reading ``json``. Some examples were cut
by the page layout (a closing brace lost); those are closed at the longest prefix that parses.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

_NAME = "000_76b2e5b5d6f6239f.txt"
_REPO = Path(__file__).resolve().parents[2]
# The workspace's shared copy when present, else the one vendored under docs/seed/ (CI clones the
# repository alone).
SEED_CANDIDATES = (_REPO.parent / "shared" / "seed" / _NAME, _REPO / "docs" / "seed" / _NAME)


def seed_text() -> str:
    for path in SEED_CANDIDATES:
        if path.exists():
            return path.read_text()
    raise FileNotFoundError(f"seed design document not found at {SEED_CANDIDATES}")


def _balanced_candidates(text: str, start: int) -> list[str]:
    """Prefixes of ``text`` from ``start`` that end after a ``}`` plus the braces still open."""
    depth = 0
    in_str = False
    esc = False
    out: list[str] = []
    for i in range(start, len(text)):
        c = text[i]
        if in_str:
            if esc:
                esc = False
            elif c == "\\":
                esc = True
            elif c == '"':
                in_str = False
            continue
        if c == '"':
            in_str = True
        elif c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            out.append(text[start : i + 1] + "}" * depth)
            if depth == 0:
                break
    return out


def seed_json_examples() -> list[dict[str, Any]]:
    text = seed_text()
    examples: list[dict[str, Any]] = []
    pos = 0
    lines = text.split("\n")
    offsets = []
    acc = 0
    for line in lines:
        offsets.append(acc)
        acc += len(line) + 1
    for n, line in enumerate(lines):
        if line.strip() != "json":
            continue
        pos = text.index("{", offsets[n])
        for candidate in reversed(_balanced_candidates(text, pos)):
            try:
                doc = orjson.loads(candidate)
            except orjson.JSONDecodeError:
                continue
            examples.append(doc)
            break
    return examples
