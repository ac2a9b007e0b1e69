"""A worker that grew by AGENT_RECYCLE_GROWTH_MIB leaves service and is replaced, for real.

The soak's stack (tools/soak/conversations.py): LiveKit, the dev Omni backend, the token
server and the agent worker under scripts/keep_running.sh, as start_all.sh runs it. With a
threshold of 1 MiB the worker has grown past it once its first conversations, two at a time,
are over (a fresh worker's pools and arenas fill in its first rooms: docs/RELIABILITY.md): it
must exit (status 75), at its first moment with no room open or, grown past twice the
threshold while the other room is still open, after draining it; keep_running.sh must start a
fresh worker, and a conversation in a new room afterwards must be answered by that fresh
process. (The decision itself, for every case: tests/unit/test_recycle_policy.py.)
"""

from __future__ import annotations

import json
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from support.infra import LIVEKIT_BIN, require

from tools.autortc.make_cases import load_cases
from tools.soak import lifetimes
from tools.soak.conversations import CONVERSATION_PAD_S, MINI_CASES, converse, start_soak_stack

pytestmark = pytest.mark.timeout(300)

RESTART_WAIT_S = 150.0  # exit, a fresh engine loaded and warm on 2 CPU cores, registration
FIRST_ROUNDS_MAX = 3  # rounds of two conversations before the worker must have grown 1 MiB
RECYCLE_LOG_WAIT_S = 5.0  # a room's end -> the worker's recycling line


def recycling_logged(agent) -> bool:
    """Whether the worker logs, within RECYCLE_LOG_WAIT_S, that it recycles."""
    deadline = time.monotonic() + RECYCLE_LOG_WAIT_S
    while "recycling: RSS" not in agent.log_text():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)
    return True


def pids_in_room(log_text: str, room: str) -> set[int]:
    """The pids of the agent processes whose log lines name `room`."""
    pids = set()
    for line in log_text.splitlines():
        if room in line and line.startswith("{"):
            pid = json.loads(line).get("pid")
            if pid is not None:
                pids.add(pid)
    return pids


def test_a_grown_worker_recycles_and_its_replacement_answers(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    require(os.access(LIVEKIT_BIN, os.X_OK), f"LiveKit server missing at {LIVEKIT_BIN}")
    require(shutil.which("espeak-ng") is not None, "espeak-ng missing")
    monkeypatch.setenv("AGENT_RECYCLE_GROWTH_MIB", "1")
    case = load_cases(MINI_CASES)[0]
    stack, token_url = start_soak_stack(tmp_path, 1, print)
    try:
        agent = next(s for s in stack.services if s.name == "agent")
        # Two conversations at a time grow a fresh worker by MiBs, one at a time sometimes by
        # less than one (the growth is its pools filling, and malloc gives memory back at each
        # room's end); the check runs at each room's end, so rounds go on until one ends past
        # the threshold.
        first_rooms = []
        with ThreadPoolExecutor(2) as pool:
            for i in range(FIRST_ROUNDS_MAX):
                firsts = list(pool.map(
                    lambda j, i=i: converse(stack, token_url, case, tmp_path / f"first-{i}-{j}",
                                            CONVERSATION_PAD_S), range(2)))
                assert all(first["ok"] for first in firsts), firsts
                first_rooms += [first["room"] for first in firsts]
                if recycling_logged(agent):
                    break

        deadline = time.monotonic() + RESTART_WAIT_S
        while not ((done := lifetimes.restarts(agent.log_text()))
                   and done[0]["registered_after_s"] is not None):
            assert agent.alive() and time.monotonic() < deadline, agent.log_tail(60)
            time.sleep(1)
        log_text = agent.log_text()
        assert "recycling: RSS" in log_text, agent.log_tail(60)
        assert [(r["status"], r["recycled"]) for r in done] == [(75, True)], done

        second = converse(stack, token_url, case, tmp_path / "second", CONVERSATION_PAD_S)
        assert second["ok"], second
        log_text = agent.log_text()
        old = set().union(*(pids_in_room(log_text, room) for room in first_rooms))
        new = pids_in_room(log_text, second["room"])
        assert len(old) == 1 and len(new) == 1 and old != new, (old, new)
    finally:
        stack.stop()
