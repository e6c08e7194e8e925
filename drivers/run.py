"""``python -m drivers.run`` — what ``make run`` starts: for now the SDK demo (``drivers.demo``)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from drivers import demo


def main(argv: Sequence[str] | None = None) -> int:
    return demo.main(argv)


if __name__ == "__main__":
    sys.exit(main())
