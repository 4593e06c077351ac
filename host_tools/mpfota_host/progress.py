"""A small progress display for long host operations (stderr, redrawn in place on a tty)."""

from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, label: str, total: int, unit: str = "B", stream=sys.stderr) -> None:
        self.label = label
        self.total = max(total, 1)
        self.unit = unit
        self.done = 0
        self.stream = stream
        self.tty = stream.isatty()
        self._last = 0.0

    def update(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if self.tty and now - self._last < 0.1 and self.done < self.total:
            return
        self._last = now
        self._draw()

    def _draw(self) -> None:
        frac = min(self.done / self.total, 1.0)
        bar = "#" * int(frac * 30)
        line = f"{self.label} [{bar:<30}] {frac * 100:5.1f}% {self.done}/{self.total} {self.unit}"
        if self.tty:
            self.stream.write("\r" + line)
        elif self.done >= self.total:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
