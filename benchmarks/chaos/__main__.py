"""``python -m benchmarks.chaos`` — the whole chaos run: every actor kind killed (benchmarks.chaos.actors),
the infrastructure faults (benchmarks.chaos.infra), then a worker node of a 3-node cluster removed
(benchmarks.chaos.nodes), each in its own process (each starts its own Ray and broker). Options are
passed to all three (``--trials``, ``--seed``, ``--json``); see each module's ``--help``.
"""

from __future__ import annotations

import subprocess
import sys


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in args):
        print(__doc__)
        return 0
    worst = 0
    for part in ("benchmarks.chaos.actors", "benchmarks.chaos.infra", "benchmarks.chaos.nodes"):
        print(f"== {part}", flush=True)
        own = [f"{a}.{part.rsplit('.', 1)[1]}.json" if i and args[i - 1] == "--json" else a
               for i, a in enumerate(args)]  # one JSON file per part: PATH.actors.json, PATH.nodes.json…
        worst = max(worst, subprocess.call([sys.executable, "-m", part, *own]))
    return worst


if __name__ == "__main__":
    sys.exit(main())
