"""Progress bars for the analysis drivers, without dependencies.

On a terminal: one line redrawn in place (``\\r``) at most ~10 times a second. Elsewhere (CI logs,
pipes): a plain line at every 10 % so logs stay short. Always on stderr, so stdout keeps only the
results a script may parse.
"""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import Self, TextIO

_WIDTH = 30


class Progress:
    """``with Progress(total=n, label="events") as bar: bar.advance(k)``."""

    def __init__(self, *, total: int, label: str, unit: str = "", stream: TextIO | None = None,
                 enabled: bool = True) -> None:
        self.total = max(int(total), 0)
        self.label = label
        self.unit = unit
        self.done = 0
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._started = time.monotonic()
        self._last_draw = 0.0
        self._last_decile = -1

    def __enter__(self) -> Self:
        self._draw(force=True)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self._started

    def advance(self, n: int = 1) -> None:
        """Count ``n`` more units done and redraw if it is time to."""
        self.done += n
        self._draw()

    def close(self) -> None:
        """Draw the final state and end the line."""
        self._draw(force=True)
        if self.enabled and self._tty:
            self.stream.write("\n")
            self.stream.flush()
        self.enabled = False

    def _draw(self, force: bool = False) -> None:
        if not self.enabled:
            return
        frac = min(self.done / self.total, 1.0) if self.total else 1.0
        if self._tty:
            now = time.monotonic()
            if not force and now - self._last_draw < 0.1:
                return
            self._last_draw = now
            filled = int(frac * _WIDTH)
            bar = "#" * filled + "-" * (_WIDTH - filled)
            self.stream.write(f"\r{self.label} [{bar}] {frac:6.1%} {self._counts()} {self._rate()}")
            self.stream.flush()
            return
        decile = int(frac * 10)
        if decile != self._last_decile or (force and frac >= 1.0 and self._last_decile != 10):
            self._last_decile = decile
            self.stream.write(f"{self.label}: {frac:.0%} {self._counts()} {self._rate()}\n")
            self.stream.flush()

    def _counts(self) -> str:
        return f"{self.done:,}/{self.total:,}{(' ' + self.unit) if self.unit else ''}"

    def _rate(self) -> str:
        elapsed = self.elapsed
        if elapsed <= 0 or not self.done:
            return ""
        rate = self.done / elapsed
        eta = (self.total - self.done) / rate if rate and self.total > self.done else 0.0
        return f"{rate:,.0f}/s, {elapsed:.0f}s elapsed" + (f", ~{eta:.0f}s left" if eta else "")
