"""When a worker that grew too much leaves service for a fresh one (pure logic).

A worker's memory must not grow without bound, whatever makes it grow. The one steady
growth found, about 0.5 MiB of the LiveKit SDK's native memory kept for every room, came
from an RPC method still registered when the room was left, and is gone but for about
30 KiB a room (room_rpc.py; docs/RELIABILITY.md, "The agent's memory growth"); this is
the bound for what may remain or come with another version. A worker notes its resident
memory once it is ready (engine loaded and warm), and after every room it served
compares: once it has grown by AGENT_RECYCLE_GROWTH_MIB it is due to be replaced.

- At the first moment it has no room open it recycles: it takes no new room and exits,
  cutting nobody off; its supervisor (supervisord, scripts/start_all.sh) starts a fresh
  worker.
- A worker busy without pause never has such a moment. At twice that growth it drains
  as on SIGTERM (agent/drain.py): each room leaves between turns and the room reconciler
  brings an agent of another worker, or of the replacement, in.

Rooms only close at a room's end, so that is where the check runs; a worker that
serves one conversation that never ends is not recycled until it ends.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

MIB = 2**20
# EX_TEMPFAIL: the supervisor starts a fresh worker (scripts/keep_running.sh at once;
# supervisord.conf counts it as an expected exit)
RECYCLE_EXIT_CODE = 75
HARD_LIMIT_FACTOR = 2  # the growth at which a worker never idle drains, in recycle thresholds


class Verdict(enum.Enum):
    KEEP = "keep"  # below the threshold, or above it with rooms open: keep serving
    RECYCLE = "recycle"  # above the threshold and idle: take no room, exit
    DRAIN = "drain"  # above the hard limit with rooms open: drain as on SIGTERM


@dataclass(frozen=True)
class RecyclePolicy:
    growth_mib: float  # 0: never recycle
    baseline_bytes: int  # resident memory once the worker was ready

    def growth(self, rss_bytes: int) -> float:
        """MiB grown since the baseline."""
        return (rss_bytes - self.baseline_bytes) / MIB

    def verdict(self, rss_bytes: int, rooms_open: int) -> Verdict:
        if not self.growth_mib:
            return Verdict.KEEP
        grown = self.growth(rss_bytes)
        if grown < self.growth_mib:
            return Verdict.KEEP
        if rooms_open == 0:
            return Verdict.RECYCLE
        if grown >= HARD_LIMIT_FACTOR * self.growth_mib:
            return Verdict.DRAIN
        return Verdict.KEEP
