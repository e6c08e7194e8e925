"""Write the generated wire contract into ``docs/wire/``: ``asyncapi.json`` (AsyncAPI 3.0, topics ->
messages) and ``schemas/{Message}.json`` (JSON Schema per message), from ``protocol.contract``.

    python -m drivers.wire_docs            # regenerate
    python -m drivers.wire_docs --check    # exit 1 if the committed files are out of date
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from protocol.contract import asyncapi_document, json_schemas

WIRE_DIR = Path(__file__).resolve().parents[1] / "docs" / "wire"


def _text(doc: Any) -> str:
    return json.dumps(doc, indent=2, sort_keys=False, ensure_ascii=False) + "\n"


def expected_files() -> dict[str, str]:
    """Relative path -> content of every generated file."""
    files = {"asyncapi.json": _text(asyncapi_document())}
    for name, schema in json_schemas().items():
        files[f"schemas/{name}.json"] = _text(schema)
    return files


def stale_files(root: Path = WIRE_DIR) -> list[str]:
    """Generated files that are missing, different, or left over under ``root``."""
    want = expected_files()
    out = [p for p, text in want.items() if not (root / p).is_file() or (root / p).read_text() != text]
    have = {str(p.relative_to(root)) for p in root.rglob("*.json")} if root.is_dir() else set()
    return sorted(out + list(have - set(want)))


def write(root: Path = WIRE_DIR) -> int:
    want = expected_files()
    (root / "schemas").mkdir(parents=True, exist_ok=True)
    for old in (root / "schemas").glob("*.json"):
        if f"schemas/{old.name}" not in want:
            old.unlink()
    for rel, text in want.items():
        (root / rel).write_text(text)
    return len(want)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m drivers.wire_docs", description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="only check that docs/wire/ is up to date")
    args = ap.parse_args(argv)
    if args.check:
        stale = stale_files()
        for p in stale:
            print(f"out of date: docs/wire/{p}", file=sys.stderr)
        if stale:
            print("run: python -m drivers.wire_docs", file=sys.stderr)
        return 1 if stale else 0
    print(f"wrote {write()} files under {WIRE_DIR}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
