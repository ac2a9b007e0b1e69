"""The worker's turns, timed by phase: where a slow turn spent its time.

Every stream waits for each turn of the worker's loop (runtime/engine.py) to get
its next frame, so a turn longer than a frame (80 ms) costs every stream real
time, and a few such turns in a row spend a young stream's playout buffer. The
step itself is far shorter (under 50 ms for 256 rows on an H100); what makes a
turn slow is the rest: admissions, freeing rows, the hand-over, the host.

TurnClock times each turn's phases (land, settle, admit, launch, hand_over,
prompts), the worker thread's own CPU time in the turn (wall minus CPU: waiting
for the device, a lock or the GIL) and the garbage collector's pauses during it
(a collection stops every Python thread, the HTTP loop's and the worker's). A
slow turn is logged with that breakdown, at most one line a second (the line
counts the slow turns since the last one), and /metrics counts slow turns and
GC pauses, so a late packet can be traced to what held the worker.
"""

from __future__ import annotations

import gc
import logging
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

from .admission import FRAME_MS

log = logging.getLogger("tts_engine.runtime")

SLOW_TURN_MS = FRAME_MS  # a turn longer than a frame costs every stream real time
LOG_INTERVAL_S = 1.0  # at most one slow-turn line a second


class GcPauses:
    """The garbage collector's pauses in this process, from gc.callbacks."""

    def __init__(self) -> None:
        self.count = 0
        self.full = 0  # of them, collections of the oldest generation (the long ones)
        self.total_ms = 0.0
        self.max_ms = 0.0
        self.last_full_collected = 0  # objects the last full collection freed
        self._started: float | None = None

    def start(self) -> None:
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        elif self._started is not None:
            ms = (time.perf_counter() - self._started) * 1000
            self._started = None
            self.count += 1
            if info["generation"] == 2:
                self.full += 1
                self.last_full_collected = info["collected"]
            self.total_ms += ms
            self.max_ms = max(self.max_ms, ms)

    def close(self) -> None:
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)


class TurnClock:
    """Times the worker's turns by phase; logs and counts the slow ones."""

    def __init__(self) -> None:
        self.gc = GcPauses()
        self.armed = False  # slow turns and GC pauses count from arm() on
        self.slow_turns = 0
        self.slow_turn_ms_max = 0.0
        self._unlogged = 0
        self._logged_at = 0.0
        self._begin()

    def _begin(self) -> None:
        self._started = time.perf_counter()
        self._cpu_started = time.thread_time()
        self._gc_started = self.gc.total_ms, self.gc.full
        self.phases: dict[str, float] = defaultdict(float)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.phases[name] += (time.perf_counter() - start) * 1000

    def arm(self) -> None:
        """Count and log slow turns, and GC pauses, from now on (the engine is ready: the
        start-up's compile makes long collections that are no load's)."""
        self.armed = True
        self.gc.start()

    def restart(self) -> None:
        """A turn starts after the worker waited, idle, for work: idle time is no turn's."""
        self._begin()

    def end_turn(self, batch: int, admitted: int) -> None:
        """The turn is over (`batch` streams launched, `admitted` of them newcomers); the next
        starts now."""
        ms = (time.perf_counter() - self._started) * 1000
        if self.armed and ms > SLOW_TURN_MS:
            self.slow_turns += 1
            self.slow_turn_ms_max = max(self.slow_turn_ms_max, ms)
            self._unlogged += 1
            now = time.perf_counter()
            if now - self._logged_at >= LOG_INTERVAL_S:
                cpu_ms = (time.thread_time() - self._cpu_started) * 1000
                phases = ", ".join(f"{k} {v:.0f}" for k, v in self.phases.items() if v >= 0.5)
                full = self.gc.full - self._gc_started[1]
                log.warning("slow worker turn: %.0f ms with %d streams (%d admitted): %s ms; "
                            "worker CPU %.0f ms, GC pauses %.0f ms (%d full%s) (%d slow turns "
                            "since the last line)", ms, batch, admitted, phases or "no phase",
                            cpu_ms, self.gc.total_ms - self._gc_started[0], full,
                            self._full_collection() if full else "", self._unlogged)
                self._logged_at, self._unlogged = now, 0
        self._begin()

    def _full_collection(self) -> str:
        """What a full collection walks: the oldest generation's objects (counted when a
        slow turn is logged, at most once a second: a walk of its own)."""
        return (f": {len(gc.get_objects(2))} objects in the oldest generation, "
                f"{self.gc.last_full_collected} collected by the last")

    def report(self) -> dict[str, float]:
        return {"slow_turns": self.slow_turns, "slow_turn_ms_max": self.slow_turn_ms_max,
                "gc_pauses": self.gc.count, "gc_full_collections": self.gc.full,
                "gc_pause_ms_sum": self.gc.total_ms,
                "gc_pause_ms_max": self.gc.max_ms}

    def close(self) -> None:
        self.gc.close()
