"""Admission control: how many real-time streams the engine can carry, and who waits.

Every engine step gives each active stream one 80 ms frame, so the streams
stay real time while steps follow each other faster than frames; the budget
keeps a margin for admissions' prefills. A step's time here is its period as
the streams see it: from its launch until it has landed and its rows are
settled, the next launch aside. The host's hand-over of the previous step's
packets runs while the device computes (runtime/engine.py), so the period is
the longer of the two plus the landing. The step time of each batch bucket is
measured at start-up (the device step alone) and kept current (an
exponential average of real periods), so the capacity is the largest batch
whose bucket's step fits the budget. A request that would exceed it (or
TTS_MAX_ACTIVE_STREAMS) waits in a bounded queue; when TTS_QUEUE_TIMEOUT_S is
up it is refused with OverCapacity, which the server answers with 503 and
Retry-After.

An admission (one prefill for the waiters admitted together) holds the batch
back for its duration, so a stream of arrivals could starve the running
streams. Within the capacity, a waiter is admitted only while every running
stream can afford the wait: its margin to its next packet's playback time,
after the steps that packet needs in the grown batch, must exceed the
admission's measured cost plus the hand-over (a packet leaves during the
hand-over after the step that completes it). When no stream can spare it,
the batch steps first (deadlines before newcomers).

TTS_ADMISSION=rows admits until the rows are full instead: streams may then
fall behind real time (offline batch work, tests of large batches on a CPU).
"""

from __future__ import annotations

import math

FRAME_MS = 80.0
REALTIME_BUDGET_MS = 0.8 * FRAME_MS  # a step's share of a frame: the rest is margin for prefills
EMA_WEIGHT = 0.05  # of each new step in the bucket's average
ADMIT_SAFETY_MS = 20.0  # margin a running stream keeps after an admission (host jitter)


class Admission:
    def __init__(self, buckets: tuple[int, ...], max_active: int, queue_timeout_s: float,
                 realtime: bool = True) -> None:
        self.buckets = buckets
        self.rows = buckets[-1]
        self.max_active = min(max_active or self.rows, self.rows)
        self.queue_timeout_s = queue_timeout_s
        self.realtime = realtime
        self.step_ms: dict[int, float] = {}
        self.admit_ms = 0.0  # average cost of one admission (its prefill)
        self.hand_over_ms = 0.0  # average time to send a step's packets
        self.rejected = 0

    def bucket(self, n: int) -> int:
        return next(b for b in self.buckets if b >= n)

    def measured(self, bucket: int, step_ms: float) -> None:
        """A bucket's calibrated step time (start-up), replacing its average."""
        self.step_ms[bucket] = step_ms

    def observe(self, n: int, step_ms: float) -> None:
        """A real step's period with n streams, folded into its bucket's average."""
        b = self.bucket(n)
        old = self.step_ms.get(b)
        self.step_ms[b] = step_ms if old is None else old + EMA_WEIGHT * (step_ms - old)

    def predicted_ms(self, n: int) -> float:
        """A step's time for n streams. Steps only grow with the batch, so it is the largest
        average of the buckets up to n's; beyond the measured ones, the largest measured
        one scaled linearly (pessimistic); 0 before anything was measured."""
        b = self.bucket(n)
        known = [ms for m, ms in self.step_ms.items() if m <= b]
        top = max(self.step_ms, default=None)
        if top is not None and b > top:
            known.append(self.step_ms[top] * b / top)
        return max(known, default=0.0)

    @property
    def capacity(self) -> int:
        """The most streams that stay real time (and within TTS_MAX_ACTIVE_STREAMS)."""
        if not self.realtime:
            return self.max_active
        n = 1
        while n < self.max_active and self.predicted_ms(n + 1) <= REALTIME_BUDGET_MS:
            n += 1
        return n

    def forget_admission_cost(self) -> None:
        """Start the admission average afresh (after start-up's cold admissions)."""
        self.admit_ms = 0.0

    def observe_admission(self, ms: float) -> None:
        self.admit_ms = _averaged(self.admit_ms, ms)

    def observe_hand_over(self, ms: float) -> None:
        self.hand_over_ms = _averaged(self.hand_over_ms, ms)

    def may_admit(self, active: int, least_margin_s: float) -> bool:
        """Room for one more stream, and time for its admission before anyone's deadline
        (`least_margin_s`: the smallest margin among the running streams, counting the
        steps their next packets need; the packets then wait for the hand-over too)."""
        if active >= self.capacity:
            return False
        needed_ms = self.admit_ms + self.hand_over_ms + ADMIT_SAFETY_MS
        return not self.realtime or least_margin_s > needed_ms / 1000

    @property
    def retry_after_s(self) -> int:
        return max(1, math.ceil(self.queue_timeout_s))


def _averaged(average: float, value: float) -> float:
    """An exponential average that starts at its first value."""
    return value if not average else average + EMA_WEIGHT * (value - average)
