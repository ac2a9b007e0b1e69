"""The stack under supervisord (scripts/supervisor.sh, scripts/supervisord.conf), for real: one
LiveKit node, the dev backend, the token server and two CPU agent workers (tiny checkpoint), on
free loopback ports with a temporary output dir. A room made through the token server gets
exactly one agent; a worker killed with SIGKILL is started again by supervisord and registers
again, and the room gets an agent back; shutdown leaves no process of the stack behind."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from livekit import api
from support.agent_worker import CallBot, unique_room
from support.infra import LIVEKIT_BIN, REPO_ROOT, free_port, require, service_env

from streamtalk_common.net import free_port_pair
from streamtalk_common.room_protocol import WORKER_ATTRIBUTE
from streamtalk_common.service_procs import members
from streamtalk_common.tables import print_table

SCRIPT = REPO_ROOT / "scripts" / "supervisor.sh"
WORKERS = 2
REGISTERED = "registered worker"  # the agent's log line once LiveKit may dispatch it
pytestmark = pytest.mark.timeout(240)


def supervisor(env: dict[str, str], *args: str,
               timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


class Stack:
    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.run_dir = Path(env["STREAMTALK_OUTPUT"]) / "run"
        self.tag = str(self.run_dir / "supervisord")  # STREAMTALK_SERVICE of its every process

    def supervisord_pid(self) -> int:
        return int((self.run_dir / "supervisord.pid").read_text())

    def processes(self, supervisord_pid: int) -> list[int]:
        return [p.pid for p in members(self.tag, supervisord_pid)]

    def pid(self, program: str) -> int:
        said = supervisor(self.env, "pid", program, timeout=20)
        return int(said.stdout) if said.stdout.strip().isdigit() else 0

    def registrations(self, worker: int) -> int:
        log = self.run_dir / f"agent-{worker}.log"
        return log.read_text(errors="replace").count(REGISTERED) if log.exists() else 0

    def keys(self) -> tuple[str, str]:
        (line,) = [x for x in Path(self.env["LIVEKIT_KEY_FILE"]).read_text().splitlines()
                   if x.strip() and not x.startswith("#")]
        key, secret = line.split(":", 1)
        return key, secret.strip().strip('"')


async def until(what: str, predicate, timeout_s: float, stack: Stack) -> float:
    """The monotonic time at which `predicate()` holds; fails after `timeout_s` naming the wait
    and the logs."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout_s:
            raise AssertionError(f"{what}: not after {timeout_s:.0f} s; logs in {stack.run_dir}")
        await asyncio.sleep(0.2)
    return time.monotonic()


@pytest.fixture
def stack(tmp_path: Path, tiny_model_dir: Path) -> Iterator[Stack]:
    require(importlib.util.find_spec("supervisor") is not None,
            "supervisor is not installed in the venv: run scripts/setup_venv.sh "
            "(its supervisor extra)")
    require(LIVEKIT_BIN.is_file(), "LiveKit server missing: run scripts/install_livekit_server.sh")
    stack = Stack(service_env(
        STREAMTALK_OUTPUT=str(tmp_path / "output"),
        LIVEKIT_KEY_FILE=str(tmp_path / "livekit-keys.yaml"),  # not the user's own keys
        LIVEKIT_NODES="1",
        AGENT_WORKERS=str(WORKERS),
        LIVEKIT_PORT=str(free_port()),
        LIVEKIT_UDP_PORT=str(free_port(socket.SOCK_DGRAM)),
        OMNI_DEV_PORT=str(free_port()),
        TOKEN_SERVER_PORT=str(free_port()),
        TTS_PORT=str(free_port()),
        AGENT_HTTP_PORT=str(free_port_pair(WORKERS - 1)),
        AGENT_METRICS_PORT=str(free_port_pair(WORKERS - 1)),
        TTS_DEEP_STREAM_MODEL_DIR=str(tiny_model_dir),
        TTS_DEEP_STREAM_DEVICE="cpu",
        AGENT_TORCH_THREADS="1",
        OMP_NUM_THREADS="1",
        TOKEN_RECONCILE_GRACE_S="2",
        STOP_GRACE_S="5",
    ))
    try:
        yield stack
    finally:
        if (stack.run_dir / "supervisord.pid").exists():
            supervisor(stack.env, "shutdown", timeout=150)


async def test_supervisord_runs_the_stack_and_restarts_a_killed_worker(stack: Stack) -> None:
    begin = time.monotonic()
    started = supervisor(stack.env, "start")
    assert started.returncode == 0, started.stdout + started.stderr[-3000:]
    running_s = time.monotonic() - begin
    supervisord_pid = stack.supervisord_pid()
    status = supervisor(stack.env, "status", timeout=20).stdout
    states = dict(line.split()[:2] for line in status.splitlines())
    programs = ["livekit:livekit-1", "omni_dev", "token_server", "agent:agent-1", "agent:agent-2"]
    assert all(states.get(p) == "RUNNING" for p in programs), status
    assert states.get("tts_server") == "STOPPED", status  # started only on demand
    assert "redis" not in states, status  # one node: no Redis
    registered = await until("both workers registered",
                             lambda: all(stack.registrations(i) for i in (1, 2)), 90, stack)

    token_url = f"http://127.0.0.1:{stack.env['TOKEN_SERVER_PORT']}"
    room = unique_room("sv")
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
        async with session.get(f"{token_url}/healthz") as r:
            assert r.status == 200
        grant_request = {"room": room, "identity": "sv"}
        async with session.post(f"{token_url}/api/token", json=grant_request) as r:
            assert r.status == 200, await r.text()
            grant = await r.json()
    assert grant["url"] == f"ws://127.0.0.1:{stack.env['LIVEKIT_PORT']}"
    user = CallBot(grant["url"], grant["token"], publish_mic=False)
    lk = api.LiveKitAPI(grant["url"], *stack.keys())

    async def agents() -> list[str]:
        listed = await lk.room.list_participants(api.ListParticipantsRequest(room=room))
        return [p.identity for p in listed.participants if p.kind == api.ParticipantInfo.Kind.AGENT]

    try:
        await user.start()
        await user.wait_for(lambda: bool(user.agent_identity and user.attribute(WORKER_ATTRIBUTE)),
                            30, "an agent")
        for _ in range(10):  # 2 s: one agent, not one per worker
            assert await agents() == [user.agent_identity]
            await asyncio.sleep(0.2)

        # the worker that serves the room dies: supervisord starts it again
        first_agent = user.agent_identity
        worker = int(user.attribute(WORKER_ATTRIBUTE).removeprefix("agent-"))
        program = f"agent:agent-{worker}"
        killed_pid, registrations = stack.pid(program), stack.registrations(worker)
        assert killed_pid in stack.processes(supervisord_pid)
        os.kill(killed_pid, signal.SIGKILL)
        killed = time.monotonic()
        respawned = await until(f"{program} started again",
                                lambda: stack.pid(program) not in (0, killed_pid), 15, stack)
        registered_again, back = await asyncio.gather(
            until(f"{program} registered again",
                  lambda: stack.registrations(worker) > registrations, 60, stack),
            until("an agent back in the room",
                  lambda: user.agent_identity not in (None, first_agent), 60, stack))
        assert await agents() == [user.agent_identity]
        said = (stack.run_dir / "supervisord.log").read_text()
        assert f"exited: agent-{worker} (terminated by SIGKILL; not expected)" in said, said[-2000:]
        print_table("supervisord: start, and a killed worker (s)", [{
            "start -> RUNNING": f"{running_s:.1f}",
            "start -> both registered": f"{registered - begin:.1f}",
            "kill -> started again": f"{respawned - killed:.1f}",
            "kill -> registered again": f"{registered_again - killed:.1f}",
            "kill -> agent back in the room": f"{back - killed:.1f}"}])
    finally:
        await user.aclose()
        await lk.aclose()

    # supervisord, LiveKit, the dev backend, the token server, the workers
    assert len(stack.processes(supervisord_pid)) >= 6
    stopped = supervisor(stack.env, "shutdown", timeout=150)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert "nothing of it is left" in stopped.stderr, stopped.stderr
    assert "SIGKILL" not in stopped.stderr, stopped.stderr  # supervisord stopped them all
    assert not stack.processes(supervisord_pid)
    assert not (stack.run_dir / "supervisord.pid").exists()
