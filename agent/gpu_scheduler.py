"""GPU priority scheduler in front of the shared TTS engine: a fast lane and a slow lane.

The engine is one model on one device serving every room of the worker. What
decides how long a listener waits is the *first packet of a live reply*, so
that work takes the fast lane: it is admitted at once, always. Everything that
can wait takes the slow lane: later segments of a reply whose audio already
has playback slack, and background work. A slow ticket is granted only by
`try_acquire` succeeding, i.e. while no fast work is in flight and a slow slot
is free, so a fast request pre-empts the admission of slow work. A slow waiter
that runs out of patience (its slack is about to be used up) is promoted to
the fast lane instead of causing a gap.

Tickets are held until the work's first packet exists. Rooms run in different
threads and event loops (the thread job executor), so state is guarded by a
threading lock and waiters are woken with `call_soon_threadsafe`.

Lane waits are kept per lane (`stats()`): count, waited, promoted, P50/P95/max.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from types import TracebackType

from streamtalk_common.stats import percentile


class Lane(StrEnum):
    FAST = "fast"
    SLOW = "slow"


@dataclass
class LaneStats:
    acquired: int = 0
    waited: int = 0  # acquisitions that did not get in at once
    promoted: int = 0  # slow requests that ran out of patience and went fast
    active: int = 0
    wait_ms: deque[float] = field(default_factory=lambda: deque(maxlen=2000))

    def snapshot(self) -> dict[str, float | int | None]:
        waits = list(self.wait_ms)
        return {
            "acquired": self.acquired,
            "waited": self.waited,
            "promoted": self.promoted,
            "active": self.active,
            "wait_ms_p50": _round(percentile(waits, 50)),
            "wait_ms_p95": _round(percentile(waits, 95)),
            "wait_ms_max": _round(max(waits) if waits else None),
        }


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


class Ticket:
    """Admission to the engine for one piece of work; release it when its first packet exists."""

    def __init__(self, scheduler: GpuScheduler, lane: Lane, requested: Lane, wait_ms: float,
                 label: str) -> None:
        self.scheduler = scheduler
        self.lane = lane
        self.requested = requested
        self.wait_ms = wait_ms
        self.label = label
        self._released = False

    @property
    def released(self) -> bool:
        return self._released

    @property
    def promoted(self) -> bool:
        return self.requested is Lane.SLOW and self.lane is Lane.FAST

    def release(self) -> None:
        if not self._released:
            self._released = True
            self.scheduler._release(self)

    def __enter__(self) -> Ticket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    async def __aenter__(self) -> Ticket:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.release()


@dataclass
class _Waiter:
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[None]


class GpuScheduler:
    def __init__(self, slow_slots: int = 2, clock: Callable[[], float] = time.monotonic) -> None:
        if slow_slots < 1:
            raise ValueError("slow_slots must be >= 1")
        self.slow_slots = slow_slots
        self._clock = clock
        self._lock = threading.Lock()
        self._stats = {Lane.FAST: LaneStats(), Lane.SLOW: LaneStats()}
        self._waiters: list[_Waiter] = []

    # -- admission ------------------------------------------------------------

    def try_acquire(self, lane: Lane, label: str = "") -> Ticket | None:
        """A ticket now, or None (only the slow lane can be refused)."""
        with self._lock:
            return self._try_locked(lane, lane, 0.0, label, waited=False)

    async def acquire(self, lane: Lane, *, max_wait_s: float | None = None,
                      label: str = "") -> Ticket:
        """Wait for a ticket. A slow request still waiting after `max_wait_s` goes fast."""
        t0 = self._clock()
        with self._lock:
            ticket = self._try_locked(lane, lane, 0.0, label, waited=False)
        if ticket is not None:
            return ticket
        loop = asyncio.get_running_loop()
        deadline = None if max_wait_s is None else t0 + max(0.0, max_wait_s)
        while True:
            waiter = _Waiter(loop, loop.create_future())
            with self._lock:
                ticket = self._try_locked(lane, lane, (self._clock() - t0) * 1000, label,
                                          waited=True)
                if ticket is not None:
                    return ticket
                self._waiters.append(waiter)
            try:
                timeout = None if deadline is None else max(0.0, deadline - self._clock())
                try:
                    await asyncio.wait_for(waiter.future, timeout)
                except TimeoutError:
                    with self._lock:
                        wait_ms = (self._clock() - t0) * 1000
                        ticket = self._try_locked(lane, lane, wait_ms, label, waited=True)
                        if ticket is None:  # out of patience: promote
                            self._stats[Lane.SLOW].promoted += 1
                            ticket = self._try_locked(Lane.FAST, lane, wait_ms, label, waited=True)
                        assert ticket is not None
                        return ticket
            finally:
                with self._lock:
                    if waiter in self._waiters:
                        self._waiters.remove(waiter)

    def _try_locked(self, lane: Lane, requested: Lane, wait_ms: float, label: str,
                    *, waited: bool) -> Ticket | None:
        fast = self._stats[Lane.FAST]
        slow = self._stats[Lane.SLOW]
        if lane is Lane.SLOW and (fast.active > 0 or slow.active >= self.slow_slots):
            return None
        st = self._stats[lane]
        st.active += 1
        st.acquired += 1
        stats_lane = self._stats[requested]
        stats_lane.wait_ms.append(wait_ms)
        if waited:
            stats_lane.waited += 1
        return Ticket(self, lane, requested, wait_ms, label)

    def _release(self, ticket: Ticket) -> None:
        with self._lock:
            st = self._stats[ticket.lane]
            st.active = max(0, st.active - 1)
            waiters, self._waiters = self._waiters, []
        for w in waiters:  # each retries; whoever gets the lock first wins
            w.loop.call_soon_threadsafe(_wake, w.future)

    # -- introspection ----------------------------------------------------------

    @property
    def fast_active(self) -> int:
        with self._lock:
            return self._stats[Lane.FAST].active

    @property
    def slow_active(self) -> int:
        with self._lock:
            return self._stats[Lane.SLOW].active

    def stats(self) -> dict[str, dict[str, float | int | None]]:
        with self._lock:
            return {lane.value: st.snapshot() for lane, st in self._stats.items()}


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
