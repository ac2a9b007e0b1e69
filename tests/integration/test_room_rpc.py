"""A room's RPC methods are withdrawn before it is left, so its native room is freed.

Against the real LiveKit server, in a fresh interpreter: round after round a room connects,
registers a method as the room agent registers its stop RPC (`agent.room_rpc.RoomRpc`), and
disconnects; malloc's bytes in use are read at each round's end. A method still registered at
the disconnect keeps the SDK's native room alive (about 0.5 MiB a room with livekit 1.1.21):
the control, which leaves it registered, shows that this measure sees it. The rounds withdraw
before the disconnect, as an agent that leaves a room itself does (`RoomAgent.leave_room`);
the job's usual cleanup withdraws just after it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from agent.allocator import malloc_totals
from streamtalk_common.paths import REPO_ROOT
from tests.support.infra import LiveKitServer

# ROUNDS rooms, each joined and left; prints the least-squares growth of malloc's bytes in use
# per room over the rounds after the first third (the SDK's pools fill in the first rooms)
ROOMS_JOINED_AND_LEFT = """
import asyncio, gc, json, os, sys
import numpy as np
from livekit import api, rtc
from agent.allocator import malloc_totals, release_free_memory
from agent.room_rpc import RoomRpc

URL, KEY, SECRET = os.environ["LK_URL"], os.environ["LK_KEY"], os.environ["LK_SECRET"]
WITHDRAW, ROUNDS = sys.argv[1] == "withdraw", int(sys.argv[2])

async def ok(data):
    return "ok"

async def one_room(i):
    name = f"rpc-{WITHDRAW}-{i}-{os.getpid()}"
    token = (api.AccessToken(KEY, SECRET).with_identity("agent")
             .with_grants(api.VideoGrants(room_join=True, room=name)).to_jwt())
    room = rtc.Room()
    await room.connect(URL, token)
    rpc = RoomRpc(room.local_participant)
    rpc.register("stop_reply", ok)
    if WITHDRAW:
        rpc.withdraw()
    await asyncio.sleep(0.3)
    await room.disconnect()

async def main():
    in_use = []
    for i in range(ROUNDS):
        await one_room(i)
        await asyncio.sleep(0.3)
        gc.collect()
        release_free_memory()
        in_use.append(malloc_totals()[0])
    start = ROUNDS // 3
    slope = np.polyfit(np.arange(start, ROUNDS), np.array(in_use[start:]), 1)[0]
    mib = [b / 2**20 for b in in_use]
    print("RESULT", json.dumps({"kib_per_room": slope / 1024, "in_use_mib": mib}), flush=True)

asyncio.run(main())
# skip the interpreter's teardown: with the control's rooms still alive in the SDK, its
# native runtime once aborted there ("panic in a function that cannot unwind")
os._exit(0)
"""


def growth_per_room(livekit_server: LiveKitServer, mode: str, rounds: int = 15) -> dict:
    env = {**os.environ, "LK_URL": livekit_server.url, "LK_KEY": livekit_server.api_key,
           "LK_SECRET": livekit_server.api_secret}
    out = subprocess.run([sys.executable, "-c", ROOMS_JOINED_AND_LEFT, mode, str(rounds)],
                         cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


@pytest.mark.skipif(malloc_totals() == (0, 0), reason="needs glibc's malloc statistics")
def test_a_room_whose_rpc_methods_are_withdrawn_leaves_no_native_memory_behind(
        livekit_server: LiveKitServer) -> None:
    withdrawn = growth_per_room(livekit_server, "withdraw")
    kept = growth_per_room(livekit_server, "keep")
    assert kept["kib_per_room"] > 250, (
        f"the control (a method left registered) grew only {kept['kib_per_room']:.0f} KiB a room:"
        f" the SDK no longer leaks the room, or the measure cannot see it: {kept}")
    assert withdrawn["kib_per_room"] < 60, (
        f"rooms whose RPC method was withdrawn grew {withdrawn['kib_per_room']:.0f} KiB each:"
        f" {withdrawn}")
