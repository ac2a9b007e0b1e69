"""Where the worker's memory goes: a log line every AGENT_HEAP_REPORT_S seconds (0: off).

For telling a leak from allocator retention in a soak (docs/RELIABILITY.md). Each
report collects garbage first, then logs (logger `streamtalk.heap`, WARNING, so that
the CLI's default level shows it): resident memory; malloc's bytes in use, freed but
kept, and its arenas (agent/allocator.py); the Python objects the collector tracks; the
rooms being served; and the object types whose counts grew most since the first
report. Python objects that pile up show in the counts; native memory that leaks shows
as malloc in use growing while the counts stay flat; memory that malloc keeps after a
free, as the free bytes growing. With AGENT_TRACEMALLOC_FRAMES=N (1..64) Python's
allocations are traced (tracemalloc, N frames each; slower) and each report adds the
tracebacks whose memory grew most since the first. A report walks every object: it
takes 0.1-0.5 s of one core, on its own thread.
"""

from __future__ import annotations

import collections
import gc
import logging
import os
import threading
import tracemalloc
from collections.abc import Callable

from .allocator import arena_count, malloc_totals

log = logging.getLogger("streamtalk.heap")

MIB = 2**20
TOP = 12


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MIB


def type_counts() -> collections.Counter[str]:
    return collections.Counter(type(o).__qualname__ for o in gc.get_objects())


class HeapReport:
    """`report()` returns (and logs) one report; `start()` reports every `every_s` on a thread."""

    def __init__(self, rooms: Callable[[], int], every_s: float,
                 tracemalloc_frames: int = 0) -> None:
        self.rooms = rooms
        self.every_s = every_s
        self.frames = tracemalloc_frames
        self.count = 0
        self._first_types: collections.Counter[str] | None = None
        self._first_snapshot: tracemalloc.Snapshot | None = None
        self._stopped = threading.Event()

    def start(self) -> None:
        if self.frames and not tracemalloc.is_tracing():
            tracemalloc.start(self.frames)
        threading.Thread(target=self._run, name="streamtalk-heap-report", daemon=True).start()

    def stop(self) -> None:
        self._stopped.set()

    def _run(self) -> None:
        while not self._stopped.wait(self.every_s):
            try:
                self.report()
            except Exception:  # a diagnostic must not take the worker down
                log.exception("heap report failed")

    def report(self) -> str:
        self.count += 1
        gc.collect()
        in_use, free = malloc_totals()
        types = type_counts()
        lines = [f"heap report {self.count}: rss {rss_mib():.1f} MiB; "
                 f"malloc in use {in_use / MIB:.1f} MiB, "
                 f"free but kept {free / MIB:.1f} MiB, {arena_count()} arenas; "
                 f"{sum(types.values())} Python objects tracked; {self.rooms()} rooms"]
        if self._first_types is None:
            self._first_types = types
        else:
            grown = collections.Counter(types)
            grown.subtract(self._first_types)
            top = [f"{name} {n:+d}" for name, n in grown.most_common(TOP) if n > 0]
            lines.append("  objects grown since the first report: " + (", ".join(top) or "none"))
        if tracemalloc.is_tracing():
            lines.extend(self._traced_growth())
        text = "\n".join(lines)
        log.warning("%s", text)
        return text

    def _traced_growth(self) -> list[str]:
        snapshot = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(False, tracemalloc.__file__)])
        if self._first_snapshot is None:
            self._first_snapshot = snapshot
            return [f"  tracemalloc: {tracemalloc.get_traced_memory()[0] / MIB:.1f} MiB traced "
                    "(the baseline)"]
        stats = snapshot.compare_to(self._first_snapshot, "traceback")
        lines = [f"  tracemalloc: {sum(s.size_diff for s in stats) / MIB:+.2f} MiB "
                 "since the first report; grown most:"]
        for s in [s for s in stats if s.size_diff > 0][:TOP]:
            lines.append(f"    {s.size_diff / 1024:+.1f} KiB in {s.count_diff:+d} blocks")
            lines.extend("      " + ln for ln in s.traceback.format(limit=self.frames))
        return lines
