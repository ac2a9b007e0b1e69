"""Resources of running processes, read from /proc: resident memory, open file
descriptors and OS threads, per process group (a service and every child it
started), and the least-squares slope of a series.

Each service of the stack runs in its own process group (its own session), so a
group is the whole service: the agent worker with any helper process it spawns,
LiveKit, the token server, the dev backend. A process that exits between listing
and reading is skipped, and an exited one that is not reaped yet (a zombie) is
not a member. A sample names the group leader's children too: a service run under
scripts/keep_running.sh (the leader) has its worker process there, a new one after each
restart (tools/soak/lifetimes.py).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import numpy as np

PAGE = os.sysconf("SC_PAGE_SIZE")
MIB = 2**20


@dataclass(frozen=True)
class Sample:
    t: float  # monotonic seconds
    rss_mib: float
    fds: int
    threads: int
    processes: int
    children: frozenset[int] = frozenset()  # members whose parent is the group's leader


def thread_count(pid: int | str = "self") -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def _group_members(pgid: int) -> list[tuple[int, int]]:
    """(pid, parent pid) of each live process of the group."""
    members = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # fields: state, parent, process group; a zombie (Z) has exited, its parent not
        # having reaped it yet: it holds nothing and must not keep a dead service "alive"
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append((int(name), int(fields[1])))
    return members


def sample_group(pgid: int) -> Sample:
    """The group's summed RSS, fds and threads now; a group without processes is an error."""
    rss_pages = fds = threads = processes = 0
    children = set()
    for pid, parent in _group_members(pgid):
        try:
            with open(f"/proc/{pid}/statm") as f:
                pages = int(f.read().split()[1])
            n_fds = len(os.listdir(f"/proc/{pid}/fd"))
            n_threads = thread_count(pid)
        except OSError:
            continue
        rss_pages, fds, threads, processes = (rss_pages + pages, fds + n_fds,
                                              threads + n_threads, processes + 1)
        if parent == pgid:
            children.add(pid)
    if processes == 0:
        raise ProcessLookupError(f"process group {pgid} has no processes left")
    return Sample(time.monotonic(), rss_pages * PAGE / MIB, fds, threads, processes,
                  frozenset(children))


def slope_per_min(times_s: list[float], values: list[float]) -> float:
    """Least-squares slope of values over time, per minute."""
    if len(times_s) < 2 or len(set(times_s)) < 2:
        raise ValueError("a slope needs samples at two different times at least, "
                         f"got {len(times_s)}")
    return 60.0 * float(np.polyfit(times_s, values, 1)[0])
