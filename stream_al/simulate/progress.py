"""A dependency-free progress line on stderr for long simulations (``tqdm`` would be one more package)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """``label  12345/49097  25%  8123 ev/s`` redrawn at most every ``interval`` seconds; silent if disabled.

    >>> import io
    >>> out = io.StringIO()
    >>> bar = Progress(10, "run", stream=out, interval=0.0)
    >>> bar.update(5); bar.close()
    >>> "5/10" in out.getvalue() and "10/10" in out.getvalue()
    True
    """

    def __init__(self, total: int, label: str, stream: TextIO | None = None, enabled: bool = True, interval: float = 0.25):
        self.total = total
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.interval = interval
        self.start = self._last = time.perf_counter()
        self.done = 0

    def update(self, done: int) -> None:
        self.done = done
        if not self.enabled:
            return
        now = time.perf_counter()
        if now - self._last >= self.interval:
            self._last = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        rate = self.done / max(now - self.start, 1e-9)
        share = self.done / self.total if self.total else 1.0
        self.stream.write(f"\r{self.label[:40]:40s} {self.done:>9d}/{self.total}  {share:4.0%}  {rate:8.0f} ev/s")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.done = self.total
            self._draw(time.perf_counter())
            self.stream.write("\n")
            self.stream.flush()
