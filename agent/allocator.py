"""The worker's malloc policy: few glibc arenas, so that what one thread frees the next one reuses.

glibc gives threads their own malloc arenas, up to 8 per core. The worker starts
threads all the time: each room is a job thread with its own event loop, whose
default executor starts more threads for the VAD and the end-of-turn model, beside
the LiveKit SDK's and torch's. Memory freed in one arena serves only the threads
that later land on that arena, so every arena keeps the free chunks of its own peak
and the process grows arena by arena (measured in the agent: 16 arenas, freed but
retained memory 34 -> 92 MiB in 5 minutes of two conversations at a time, while
Python's own heap stayed flat). Capping the arenas (`M_ARENA_MAX`, what
MALLOC_ARENA_MAX sets) lets the free chunks serve every thread. It must be set
before the process has 8 arenas: glibc fixes its limit then.

Free chunks inside an arena stay resident too: glibc returns memory on its own only
from the top of a heap. `release_free_memory` (malloc_trim) gives back every free page,
wherever it lies; the worker calls it when a room ends (0.7 ms on a 640 MiB process in
a bare reproduction, which it shrank by 13 MiB).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import os
import re
import tempfile
import time
from pathlib import Path

log = logging.getLogger("streamtalk.agent")

M_ARENA_MAX = -8  # mallopt parameter (malloc.h)


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
                 "uordblks", "fordblks", "keepcost")]


@functools.cache
def _libc() -> ctypes.CDLL | None:
    """glibc (2.33 or later: mallinfo2), or None where malloc is another (musl, macOS): the
    policy is then a no-op."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    libc = ctypes.CDLL(name)
    if not all(hasattr(libc, f) for f in ("mallopt", "malloc_info", "mallinfo2")):
        return None
    libc.fopen.restype = ctypes.c_void_p
    libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
    libc.fclose.argtypes = [ctypes.c_void_p]
    libc.mallinfo2.restype = _Mallinfo2
    return libc


def limit_arenas(count: int) -> bool:
    """Cap this process's malloc arenas at `count` (0: leave glibc's default); whether
    the cap is in force."""
    if count < 0:
        raise ValueError(f"arena count {count} is negative; valid: 0 (glibc's default) or more")
    if count == 0:
        return False
    libc = _libc()
    if libc is None:
        log.info("malloc is not glibc's: the arena cap does not apply")
        return False
    if libc.mallopt(M_ARENA_MAX, count) != 1:
        log.warning("mallopt(M_ARENA_MAX, %d) failed: malloc keeps its default arenas", count)
        return False
    return True


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def release_free_memory() -> tuple[int, float]:
    """Give the pages that malloc holds free back to the system (malloc_trim: every arena,
    not only the top of the heap); the bytes of resident memory that went, and the
    milliseconds it took. (0, 0.0) where malloc is not glibc's."""
    libc = _libc()
    if libc is None:
        return 0, 0.0
    before, t0 = rss_bytes(), time.perf_counter()
    libc.malloc_trim(0)
    return before - rss_bytes(), (time.perf_counter() - t0) * 1000


def arena_count() -> int:
    """The malloc arenas this process has now (glibc's malloc_info); 0 where malloc is
    not glibc's."""
    libc = _libc()
    if libc is None:
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "malloc_info.xml"
        stream = libc.fopen(str(path).encode(), b"w")
        if not stream:
            raise OSError(f"cannot open {path} for malloc_info")
        try:
            libc.malloc_info(0, stream)
        finally:
            libc.fclose(stream)
        return len(re.findall(r'<heap nr="\d+">', path.read_text()))


def malloc_totals() -> tuple[int, int]:
    """Bytes malloc has handed out and not had back (mmapped blocks included), and bytes
    freed but kept in its arenas (glibc's mallinfo2, all arenas); (0, 0) where malloc is
    not glibc's."""
    libc = _libc()
    if libc is None:
        return 0, 0
    info = libc.mallinfo2()
    return info.uordblks + info.hblkhd, info.fordblks
