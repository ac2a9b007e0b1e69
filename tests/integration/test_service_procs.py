"""streamtalk_common/service_procs.py on real processes: a child that left its parent's
process group and ignores SIGTERM is found by its tag and killed; an untagged one is not."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from streamtalk_common.service_procs import TAG_VAR, members, stop

# a parent in its own group starts a child in its own session that ignores SIGTERM and then
# prints its pid; the parent waits
PARENT = """
import subprocess, sys, time
subprocess.Popen([sys.executable, "-c", "import os, signal, time; "
                  "signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                  "print(os.getpid(), flush=True); time.sleep(600)"], start_new_session=True)
time.sleep(600)
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_stop_finds_a_child_that_left_the_group_and_kills_it(tmp_path) -> None:
    tag = f"{tmp_path}/service"
    parent = subprocess.Popen([sys.executable, "-c", PARENT], env={**os.environ, TAG_VAR: tag},
                              stdout=subprocess.PIPE, text=True, start_new_session=True)
    stray = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)  # EngineCore"],
                             start_new_session=True)
    try:
        child = int(parent.stdout.readline())
        assert os.getpgid(child) != parent.pid
        assert {p.pid for p in members(tag, parent.pid)} == {parent.pid, child}

        said: list[str] = []
        assert stop(tag, parent.pid, grace_s=1.0, named="EngineCore", say=said.append)
        parent.wait(5)
        deadline = time.monotonic() + 5
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(child)
        assert said[0].startswith("stopping 2 process(es)")
        assert said[1].startswith(f"still alive after 1 s, SIGKILL: {child} (python")
        assert (f"left alone, not started by this stack ({TAG_VAR} is not {tag}): {stray.pid} ("
                in said[2])
        assert _alive(stray.pid) and members(tag, parent.pid) == []
    finally:
        for proc in (parent, stray):
            proc.kill()
            proc.wait()
