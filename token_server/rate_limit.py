"""A token bucket per client: `per_min` requests a minute, in bursts of up to as many."""

from __future__ import annotations

import time

REFILL_S = 60.0  # an empty bucket is full again after this long


class RateLimiter:
    def __init__(self, per_min: int) -> None:
        if per_min < 1:
            raise ValueError(f"per_min must be 1 or more, got {per_min}")
        self.per_min = per_min
        self._per_s = per_min / REFILL_S
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, monotonic time)
        self._swept_at = time.monotonic()

    def acquire(self, key: str) -> float:
        """Take one token for `key`: 0.0 when granted, else the seconds until one is there."""
        now = time.monotonic()
        self._sweep(now)
        tokens, at = self._buckets.get(key, (float(self.per_min), now))
        tokens = min(float(self.per_min), tokens + (now - at) * self._per_s)
        if tokens >= 1:
            self._buckets[key] = (tokens - 1, now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1 - tokens) / self._per_s

    def _sweep(self, now: float) -> None:
        # A bucket untouched for REFILL_S is full, the same as none: forgetting it keeps memory
        # to the clients of the last minute or two, whatever number of addresses call.
        if now - self._swept_at < REFILL_S:
            return
        self._swept_at = now
        self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < REFILL_S}
