"""``python -m drivers.run`` — what ``make run`` starts: the main job (``drivers.main_job``):
embedded mosquitto, sfa-ops and the sample platform with its scripted faults, a live view and a
summary. The SDK-only demo is ``python -m drivers.demo``."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from drivers import main_job


def main(argv: Sequence[str] | None = None) -> int:
    return main_job.main(argv)


if __name__ == "__main__":
    sys.exit(main())
