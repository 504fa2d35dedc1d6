"""A log filter that lets the same line through a few times per window, then counts it.

Under a flood every failing request logged the same warning: 42,405 lines in 15 s (issue 18),
enough to fill a disk or bury the one line that matters. Identical records (same logger, level
and rendered message) pass `burst` times per `window_s`; the rest are dropped and counted, and
the first one let through after the window says how many were dropped. Different lines are
never held back by each other.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

BURST = 5
WINDOW_S = 10.0
# Forget lines not seen for a window once this many are remembered, so memory stays bounded.
_PRUNE_AT = 1024


class RepeatFilter(logging.Filter):
    def __init__(
        self,
        burst: int = BURST,
        window_s: float = WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self._burst = burst
        self._window_s = window_s
        self._clock = clock
        self._lock = threading.Lock()
        # line -> [window start, let through in the window, dropped since the last one shown]
        self._seen: dict[tuple[str, int, str], list[float]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.levelno, record.getMessage())
        now = self._clock()
        with self._lock:
            seen = self._seen.get(key)
            if seen is None:
                if len(self._seen) >= _PRUNE_AT:
                    self._prune(now)
                self._seen[key] = [now, 1, 0]
                return True
            if now - seen[0] >= self._window_s:
                dropped = int(seen[2])
                seen[:] = [now, 1, 0]
                if dropped:
                    record.msg = f"{key[2]} [the same line {dropped} more times before, dropped]"
                    record.args = None
                return True
            if seen[1] < self._burst:
                seen[1] += 1
                return True
            seen[2] += 1
            return False

    def _prune(self, now: float) -> None:
        stale = [k for k, v in self._seen.items() if now - v[0] >= self._window_s]
        for k in stale:
            del self._seen[k]


def limit_repeats(logger: logging.Logger | None = None) -> None:
    """Put a `RepeatFilter` on every handler of `logger` (the root by default): a filter on
    a handler sees the records of every logger below it, a filter on a logger only its own."""
    for handler in (logger or logging.getLogger()).handlers:
        if not any(isinstance(f, RepeatFilter) for f in handler.filters):
            handler.addFilter(RepeatFilter())
