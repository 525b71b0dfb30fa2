"""Progress per stage: a redrawn bar on a terminal, plain log lines otherwise.

Batch jobs write to files, where a carriage-return bar becomes megabytes of noise, so off a
TTY the same progress is logged as a line at most every 30 seconds and at the end.
"""

from __future__ import annotations

import time

from rerankcli.core.library_output import terminal


class Progress:
    def __init__(self, label: str, total: int, enabled: bool = True, stream=None) -> None:
        self.label, self.total, self.done = label, total, 0
        self.stream = stream or terminal()  # stderr, also while library output is redirected
        self.enabled = enabled and total > 0
        self.tty = self.stream.isatty()
        self.start = self.last = time.monotonic()

    def update(self, n: int = 1) -> None:
        self.done = min(self.total, self.done + n)
        now = time.monotonic()
        if not self.enabled or now - self.last < (0.2 if self.tty else 30.0):
            return
        self.last = now
        self._show(now)

    def _show(self, now: float, end: str = "") -> None:
        elapsed = max(now - self.start, 1e-9)
        rate = self.done / elapsed
        eta = (self.total - self.done) / rate if rate > 0 else float("inf")
        share = self.done / self.total
        text = (f"{self.label}: {self.done}/{self.total} ({share:.0%}) "
                f"{rate:.1f}/s, elapsed {elapsed:.0f}s, ETA {eta:.0f}s")
        if self.tty:
            bar = "#" * int(share * 20)
            self.stream.write(f"\r{self.label}: [{bar:<20}] {text[len(self.label) + 2:]}\033[K{end}")
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and (self.tty or time.monotonic() - self.start > 30.0):
            self._show(time.monotonic(), end="\n" if self.tty else "")
