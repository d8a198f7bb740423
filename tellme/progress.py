"""A dependency-free progress bar for long work (conversion, training, simulation).

Writes to stderr; redraws in place on a terminal, prints a line per 10% otherwise (CI logs).
"""

from __future__ import annotations

import sys
import time


class Progress:
    """``with Progress(total, "converting") as p: ... p.update(n, note="layers.3")``."""

    def __init__(self, total: int, label: str, unit: str = "", stream=None, enabled=True):
        self.total = max(int(total), 1)
        self.label = label
        self.unit = unit
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.done = 0
        self.start = time.monotonic()
        self._tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._last_decile = -1

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if self.enabled and exc_type is None:
            self._draw(final=True)
        elif self.enabled and self._tty:
            self.stream.write("\n")

    def update(self, n: int = 1, note: str = "") -> None:
        self.done = min(self.done + n, self.total)
        if self.enabled:
            self._draw(note=note)

    def _draw(self, note: str = "", final: bool = False) -> None:
        frac = self.done / self.total
        elapsed = time.monotonic() - self.start
        eta = elapsed / frac - elapsed if frac > 0 else 0.0
        line = (f"{self.label}: {100 * frac:5.1f}% {self.done}/{self.total}{self.unit} "
                f"[{elapsed:.1f}s, eta {eta:.1f}s] {note}")
        if self._tty:
            bar = "#" * int(30 * frac)
            self.stream.write(f"\r{self.label}: [{bar:<30}] {line[len(self.label) + 2:]}"[:120])
            if final:
                self.stream.write("\n")
        else:
            decile = int(10 * frac)
            if decile != self._last_decile or final:
                if not (final and decile == self._last_decile):
                    self.stream.write(line + "\n")
                self._last_decile = decile
        self.stream.flush()
