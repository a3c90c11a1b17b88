"""Limits of the Skyhook server: request sizes, resident memory and the per-scan CPU-time budget.

The concurrent-scan slots are :class:`~.server.SkyhookServer`'s; the budget is checked between
batches by the scans in :mod:`.store` and by the server's stream.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

from casa_data.errors import CasaError

MAX_READ = 64 << 20  # bytes per raw "read" action
MAX_LIST = 1000      # FlightInfos of one ListFlights
MAX_COUNT = 64       # files whose rows are counted for a FlightInfo (more: total_records -1)
COUNT_SECONDS = 5.0   # time a FlightInfo may spend counting rows (more: total_records -1)
MAX_SCHEMA_COLUMNS = 256  # ROOT columns read (one entry) for a FlightInfo's schema


def _rss() -> int:
    """Resident memory of this process in bytes (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


class ScanBudgetExceeded(CasaError):
    """A scan used more CPU time than the server's per-scan limit."""


class _Budget:
    """CPU seconds of one scan, counted over the stretches where it runs, checked between batches."""

    def __init__(self, limit: float | None):
        self.limit, self.used, self._t0 = limit, 0.0, None

    def start(self) -> None:
        self._t0 = time.thread_time()

    def stop(self) -> None:
        if self._t0 is not None:
            self.used += time.thread_time() - self._t0
            self._t0 = None

    def check(self) -> None:
        used = self.used + (time.thread_time() - self._t0 if self._t0 is not None else 0.0)
        if self.limit and used > self.limit:
            raise ScanBudgetExceeded(
                f"scan stopped after {used:.1f} s of CPU time, above this server's per-scan limit of "
                f"{self.limit:g} s (--max-scan-cpu); ask for fewer files, columns or a narrower filter")


def _checked(it: Iterator, budget: _Budget) -> Iterator:
    """``it``, with the CPU budget checked after every batch (a filter dropping every row still stops)."""
    for b in it:
        budget.check()
        yield b
