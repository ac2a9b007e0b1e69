"""The worker's malloc policy (agent/allocator.py): its threads share a few glibc arenas.

Each case runs in a fresh interpreter: glibc fixes its arena limit once a process has 8
arenas, and this test process may have them already.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from agent.allocator import arena_count, limit_arenas
from agent.config import AgentConfig, AgentConfigError
from streamtalk_common.paths import REPO_ROOT

THREADS = 12

# Starts the worker's CLI as `python -m agent --help` does (main() returns before any
# service loads), then THREADS threads that all allocate while alive together, which
# without a cap gives each thread an arena of its own; prints the arenas before and after
# (the imports make 1-3 before main() runs).
WORKER_THEN_THREADS = f"""
import sys, threading
from agent import worker
from agent.allocator import arena_count
try:
    worker.main(["--help"])
except SystemExit:
    pass
before = arena_count()
barrier = threading.Barrier({THREADS} + 1)
def work():
    held = [bytearray(4096) for _ in range(64)]  # past pymalloc's 512 bytes: malloc
    barrier.wait()
    barrier.wait()
threads = [threading.Thread(target=work) for _ in range({THREADS})]
for t in threads:
    t.start()
barrier.wait()
print("ARENAS", before, arena_count(), flush=True)
barrier.wait()
for t in threads:
    t.join()
"""


def arenas_of_a_worker(**env: str) -> tuple[int, int]:
    """The arenas of a worker process before and while its threads allocate."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENT_", "MALLOC_"))}
    out = subprocess.run([sys.executable, "-c", WORKER_THEN_THREADS], cwd=REPO_ROOT,
                         env={**full_env, **env}, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("ARENAS"))
    return int(line.split()[1]), int(line.split()[2])


@pytest.mark.skipif(arena_count() == 0, reason="malloc is not glibc's")
def test_the_workers_threads_add_no_arena_beyond_two() -> None:
    before, during = arenas_of_a_worker()
    assert during <= max(before, 2), (before, during)


@pytest.mark.skipif(arena_count() == 0, reason="malloc is not glibc's")
def test_without_the_cap_each_thread_gets_an_arena() -> None:
    # the control: what the cap prevents (glibc allows 8 arenas per core, at least 8)
    before, during = arenas_of_a_worker(AGENT_MALLOC_ARENA_MAX="0")
    assert during > max(before, 8), (before, during)


def test_the_arena_knob_is_validated() -> None:
    assert AgentConfig.from_env({}).malloc_arena_max == 2
    assert AgentConfig.from_env({"AGENT_MALLOC_ARENA_MAX": "0"}).malloc_arena_max == 0
    with pytest.raises(AgentConfigError, match="AGENT_MALLOC_ARENA_MAX"):
        AgentConfig.from_env({"AGENT_MALLOC_ARENA_MAX": "-1"})
    with pytest.raises(ValueError, match="valid: 0"):
        limit_arenas(-1)
    assert limit_arenas(0) is False  # glibc's default stays


FREED_BELOW_A_PINNED_TOP = """
from agent.allocator import release_free_memory, rss_bytes
chunks = [bytearray(1024) for _ in range(40_000)]  # 40 MiB of malloc'd, touched chunks
pin = bytearray(1024)  # allocated last: free() alone cannot shrink the heap below it
before = rss_bytes()
del chunks
kept = before - rss_bytes()
released, ms = release_free_memory()
print("KEPT", kept, "RELEASED", released)
"""


@pytest.mark.skipif(arena_count() == 0, reason="malloc is not glibc's")
def test_freed_memory_inside_the_heap_goes_back_to_the_system() -> None:
    out = subprocess.run([sys.executable, "-c", FREED_BELOW_A_PINNED_TOP], cwd=REPO_ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    words = out.stdout.split()
    kept, released = int(words[words.index("KEPT") + 1]), int(words[words.index("RELEASED") + 1])
    assert kept < 4 * 2**20  # free() kept the pages resident
    assert released > 30 * 2**20
