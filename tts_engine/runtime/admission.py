"""Admission control: how many real-time streams the engine can carry, and who waits.

Every engine step gives each active stream one 80 ms frame, so the streams
stay real time while steps follow each other faster than frames; the budget
keeps a margin for admissions' prefills. A step's period is what the streams
see of it: from its launch until it has landed and its frames are taken. The
host's hand-over of the previous step's packets runs while the device
computes (runtime/engine.py), so the period is the longer of the two plus the
landing. Admissions, and freeing the rows of streams cancelled or ended
between steps, are timed on their own, not in the period.

The capacity model. Start-up times every batch bucket's step on idle rows
(its calibration). Real periods differ from it by a factor that moves with
the load: the landing and the hand-over grow with the batch, attention spans
grow with the replies, another process may share the GPU. So the model
learns one number, the slowdown: the median of period / calibrated step over
the last STEP_WINDOW steps, whatever their bucket (the window starts full of
the calibration itself, 1.0). A bucket's predicted step is its calibration
times the slowdown, and the capacity is the largest batch whose predicted
step fits the budget.

A median ignores spikes (a garbage collection, the GIL held by the HTTP
loop) unless they fill half the window, and every step moves it, whatever
its bucket: the capacity falls when steps really become slower and rises
again when they recover. An average per bucket, the model before this one,
ratcheted: spikes pushed a bucket over the budget, that bucket was then never
stepped again, so its average never came down, and the capacity stayed low
for the rest of the process (docs/PERFORMANCE.md, "Capacity that ratcheted
down").

A request that would exceed the capacity (or TTS_MAX_ACTIVE_STREAMS) waits
in a bounded queue; when TTS_QUEUE_TIMEOUT_S is up it is refused with
OverCapacity, which the server answers with 503 and Retry-After.

An admission (one prefill for the waiters admitted together) holds the batch
back for its duration, so a stream of arrivals could starve the running
streams. Within the capacity, a waiter is admitted only while every running
stream can afford the wait: its margin to its next packet's playback time,
after the steps that packet needs in the grown batch (each with the rows freed
before it: a high quantile of recent turns, 4-9 ms a step from 128 streams on
in the closed loop on an H100), must exceed the cost of admitting the group
the waiter completes, plus the hand-over (a packet leaves during the hand-over
after the step that completes it). A group's cost grows with its size (every
newcomer is prefilled, and those whose prompts were not built while a step ran
have them built first), so it is kept per group size: a high quantile of that
size's recent admissions; a size not seen yet costs what the next larger one
seen did, or, beyond the largest, that one's cost scaled up linearly. The hand-over is a
high quantile of recent ones too: the gate guards single deadlines, so it
plans for the slow cases, where the capacity plans for the typical step. When
no stream can spare the time, the batch steps first (deadlines before
newcomers).

TTS_ADMISSION=rows admits until the rows are full instead: streams may then
fall behind real time (offline batch work, tests of large batches on a CPU). It is
what `auto` means on a CPU: there the engine shares the cores with the STT and the
LLM, each step slows down while they run, and a reply starts right after the STT, so
the capacity learned from those steps fell to 1 and refused a reply that the suite's
short soak then spoke in full in rows mode (2026-12-05).
"""

from __future__ import annotations

import math
from collections import deque

from streamtalk_common.stats import percentile

FRAME_MS = 80.0
REALTIME_BUDGET_MS = 0.8 * FRAME_MS  # a step's share of a frame: the rest is margin for prefills
STEP_WINDOW = 64  # recent steps (a second or two) in the slowdown, and recent hand-overs
ADMIT_WINDOW = 16  # recent admissions per group size
GATE_QUANTILE = 0.9  # of recent admissions and hand-overs: what the deadline gate plans for
ADMIT_SAFETY_MS = 20.0  # margin a running stream keeps after an admission (host jitter)


class RecentQuantile:
    """A quantile of the last `size` values: a few outliers do not move it, and it follows
    a lasting change within `size` values. `start` fills the window at first."""

    def __init__(self, size: int, q: float, start: float | None = None) -> None:
        self.q = q
        self._values: deque[float] = deque([] if start is None else [start] * size, maxlen=size)
        self.value = 0.0 if start is None else start

    def add(self, value: float) -> None:
        self._values.append(value)
        self.value = percentile(self._values, 100 * self.q)


class Admission:
    def __init__(self, buckets: tuple[int, ...], max_active: int, queue_timeout_s: float,
                 realtime: bool = True) -> None:
        self.buckets = buckets
        self.rows = buckets[-1]
        self.max_active = min(max_active or self.rows, self.rows)
        self.queue_timeout_s = queue_timeout_s
        self.realtime = realtime
        self.calibrated_ms: dict[int, float] = {}
        self._baseline_ms: dict[int, float] = {}  # per bucket, from the calibration
        self._slowdown = RecentQuantile(STEP_WINDOW, 0.5, start=1.0)
        self._admission_ms: dict[int, RecentQuantile] = {}  # per group size
        self._hand_over_ms = RecentQuantile(STEP_WINDOW, GATE_QUANTILE)
        self._settle_ms = RecentQuantile(STEP_WINDOW, GATE_QUANTILE)
        self.rejected = 0

    def bucket(self, n: int) -> int:
        return next(b for b in self.buckets if b >= n)

    def measured(self, bucket: int, step_ms: float) -> None:
        """A bucket's calibrated step time (start-up). Steps only grow with the batch, so a
        bucket's baseline is the largest calibration up to it; beyond the calibrated ones,
        the largest calibrated bucket's scaled linearly (pessimistic)."""
        self.calibrated_ms[bucket] = step_ms
        top = max(self.calibrated_ms)
        largest = 0.0
        for b in self.buckets:
            beyond = self.calibrated_ms[top] * b / top if b > top else 0.0
            largest = max(largest, self.calibrated_ms.get(b, 0.0), beyond)
            self._baseline_ms[b] = largest

    @property
    def slowdown(self) -> float:
        """Real step periods over their calibration (the median of the recent steps)."""
        return self._slowdown.value

    def observe(self, n: int, period_ms: float) -> None:
        """A real step's period with n streams (admissions and freed rows aside)."""
        baseline = self._baseline_ms.get(self.bucket(n))
        if baseline:  # without a calibration (an engine that did not warm up) nothing compares
            self._slowdown.add(period_ms / baseline)

    def predicted_ms(self, n: int) -> float:
        """A step's period for n streams: its bucket's calibration times the slowdown (0
        before the calibration)."""
        return self._baseline_ms.get(self.bucket(n), 0.0) * self.slowdown

    def observe_settle(self, ms: float) -> None:
        """Rows freed between two steps took `ms` (streams that ended or were cancelled)."""
        self._settle_ms.add(ms)

    def frame_ms(self, n: int) -> float:
        """What a running stream waits for each frame with n streams, as the gate plans it:
        the predicted step and the rows freed before it (a high quantile of recent ones)."""
        return self.predicted_ms(n) + self._settle_ms.value

    def predicted_steps(self) -> dict[int, float]:
        """Every bucket's predicted step period (ms), for /metrics."""
        return {b: self.predicted_ms(b) for b in self.buckets}

    @property
    def capacity(self) -> int:
        """The most streams that stay real time (and within TTS_MAX_ACTIVE_STREAMS)."""
        if not self.realtime:
            return self.max_active
        fits = 1
        for b in self.buckets:  # predicted steps only grow with the bucket
            if self.predicted_ms(b) > REALTIME_BUDGET_MS:
                break
            fits = b
        return min(fits, self.max_active)

    def forget_admission_cost(self) -> None:
        """Start the admission costs afresh (after start-up's cold admissions)."""
        self._admission_ms.clear()

    def observe_admission(self, newcomers: int, ms: float) -> None:
        """An admission of `newcomers` together took `ms` (their prompts and prefill)."""
        if newcomers not in self._admission_ms:
            self._admission_ms[newcomers] = RecentQuantile(ADMIT_WINDOW, GATE_QUANTILE)
        self._admission_ms[newcomers].add(ms)

    def admission_costs(self) -> dict[int, float]:
        """The planned cost (ms) of admitting a group, per group size seen."""
        return {k: recent.value for k, recent in sorted(self._admission_ms.items())}

    def admission_ms(self, newcomers: int) -> float:
        """The planned cost of admitting `newcomers` together: that group size's, else the
        next larger size's seen, else the largest's scaled linearly (0 before any)."""
        costs = self.admission_costs()
        if newcomers in costs:
            return costs[newcomers]
        if larger := [k for k in costs if k > newcomers]:
            return costs[min(larger)]
        if not costs:
            return 0.0
        top = max(costs)
        return costs[top] * newcomers / top

    def observe_hand_over(self, ms: float) -> None:
        self._hand_over_ms.add(ms)

    @property
    def hand_over_ms(self) -> float:
        return self._hand_over_ms.value

    def may_admit(self, batch: int, newcomers: int, least_margin_s: float) -> bool:
        """Room for one more stream beside `batch`, and time to admit the group of
        `newcomers` it completes before anyone's deadline (`least_margin_s`: the smallest
        margin among the running streams, counting the steps their next packets need in
        the grown batch; the packets then wait for the hand-over too)."""
        if batch >= self.capacity:
            return False
        needed_ms = self.admission_ms(newcomers) + self.hand_over_ms + ADMIT_SAFETY_MS
        return not self.realtime or least_margin_s > needed_ms / 1000

    @property
    def retry_after_s(self) -> int:
        return max(1, math.ceil(self.queue_timeout_s))
