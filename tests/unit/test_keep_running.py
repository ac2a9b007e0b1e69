"""scripts/keep_running.sh, run for real: which exits start the command again, and that a
stop ends the loop without a restart."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from streamtalk_common.paths import REPO_ROOT

KEEP_RUNNING = REPO_ROOT / "scripts" / "keep_running.sh"
# each start appends a line to the count file, then exits with the status its line number
# picks (the last one is kept for every later start); "sleep" stays up until signalled
COMMAND = """n=$(wc -l < "$1" 2>/dev/null || echo 0); echo start >> "$1"
shift; codes=("$@"); code=${codes[$n]:-${codes[-1]}}
[[ $code == sleep ]] && exec sleep 60
exit "$code"
"""


def keep_running(tmp_path: Path, *codes: str, min_up_s: str = "30",
                 backoff_s: str = "5") -> tuple[subprocess.Popen[str], Path]:
    count = tmp_path / "starts"
    env = {**os.environ, "RESTART_MIN_UP_S": min_up_s, "RESTART_BACKOFF_S": backoff_s}
    proc = subprocess.Popen(["bash", str(KEEP_RUNNING), "svc", "bash", "-c", COMMAND, "cmd",
                             str(count), *codes],
                            env=env, stderr=subprocess.PIPE, text=True, start_new_session=True)
    return proc, count


def starts(count: Path) -> int:
    return len(count.read_text().splitlines()) if count.exists() else 0


def wait_for_starts(count: Path, n: int, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while starts(count) < n:
        assert time.monotonic() < deadline, f"{starts(count)} starts, expected {n}"
        time.sleep(0.05)


def test_a_recycled_command_starts_again_at_once_and_a_stop_ends_the_loop(tmp_path) -> None:
    proc, count = keep_running(tmp_path, "75", "75", "sleep")
    wait_for_starts(count, 3)
    os.killpg(proc.pid, signal.SIGTERM)  # as stopping a service does: its whole group
    assert proc.wait(timeout=10) == 128 + signal.SIGTERM
    assert starts(count) == 3
    log = proc.stderr.read()
    assert log.count("svc exited with status 75 after 0 s (recycled); starting it again") == 2, log


def test_an_exit_soon_after_the_start_is_a_failed_start_not_retried(tmp_path) -> None:
    proc, count = keep_running(tmp_path, "3")
    assert proc.wait(timeout=10) == 3
    assert starts(count) == 1
    assert "within 30 s of its start: not starting it again" in proc.stderr.read()


def test_an_exit_after_the_service_was_up_starts_it_again_after_the_backoff(tmp_path) -> None:
    proc, count = keep_running(tmp_path, "4", "sleep", min_up_s="0", backoff_s="0.5")
    started = time.monotonic()
    wait_for_starts(count, 2)
    assert time.monotonic() - started >= 0.5
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=10)
    assert starts(count) == 2
    assert "svc exited with status 4 after 0 s, unexpectedly; starting it again in 0.5 s" \
        in proc.stderr.read()
