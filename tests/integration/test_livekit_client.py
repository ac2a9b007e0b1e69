"""The worker creates the LiveKit SDK's native client before any room does (agent/worker.py).

The SDK creates its process-wide client on first use, without a lock. Two rooms that start
on two threads in the same moment each created one; events go to the last one made, so the
room subscribed to the other never heard its connect callback, and the SDK's panic took the
worker down. The case runs in a fresh interpreter, where no client exists yet.
"""

from __future__ import annotations

import subprocess
import sys

from streamtalk_common.paths import REPO_ROOT

# Two threads touch the SDK's client at the same moment, as two rooms' connects do, after the
# worker's start-up step; prints how many clients they saw.
TWO_ROOMS_AT_ONCE = """
import threading
from livekit.rtc._ffi_client import FfiClient
from agent.worker import create_livekit_client
create_livekit_client()
barrier = threading.Barrier(2)
seen = []
def first_use():
    barrier.wait()
    seen.append(id(FfiClient.instance))
threads = [threading.Thread(target=first_use) for _ in range(2)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print("CLIENTS", len(set(seen)), flush=True)
"""


def test_rooms_starting_at_once_share_the_client_the_worker_created() -> None:
    out = subprocess.run([sys.executable, "-c", TWO_ROOMS_AT_ONCE], cwd=REPO_ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("CLIENTS"))
    assert line == "CLIENTS 1", line
