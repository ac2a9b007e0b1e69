"""scripts/start_all.sh: start, status, port clash, stop that leaves nothing behind."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from infra_fixtures import LIVEKIT_BIN, REPO_ROOT, free_port, require, service_env
from livekit import rtc

SCRIPT = REPO_ROOT / "scripts" / "start_all.sh"
pytestmark = pytest.mark.timeout(240)


def run_script(
    env: dict[str, str], *args: str, timeout: float = 200
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"


@pytest.fixture
def stack_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    require(LIVEKIT_BIN.is_file(), "LiveKit server missing: run scripts/install_livekit_server.sh")
    env = service_env(
        STREAMTALK_OUTPUT=str(tmp_path / "output"),
        STREAMTALK_SKIP_INSTALL="1",  # the suite's set-up already installed everything
        STREAMTALK_SKIP_TTS_DEMO="1",
        LIVEKIT_PORT=str(free_port()),
        LIVEKIT_UDP_PORT=str(free_port(socket.SOCK_DGRAM)),
        TOKEN_SERVER_PORT=str(free_port()),
        OMNI_DEV_PORT=str(free_port()),
        AGENT_HTTP_PORT=str(free_port()),
        STOP_GRACE_S="5",
    )
    try:
        yield env
    finally:
        run_script(env, "stop", timeout=60)


async def test_start_status_stop(stack_env: dict[str, str], tmp_path: Path) -> None:
    env = stack_env
    started = run_script(env, "start")
    assert started.returncode == 0, started.stderr[-3000:]
    web_url = f"http://127.0.0.1:{env['TOKEN_SERVER_PORT']}/"
    assert f"web client:   {web_url}" in started.stdout

    status = run_script(env, "status", timeout=30)
    assert status.returncode == 0, status.stdout + status.stderr
    lines = status.stdout.splitlines()
    assert len(lines) == 4 and all("healthy" in line for line in lines), status.stdout

    run_dir = Path(env["STREAMTALK_OUTPUT"]) / "run"
    pids = {
        name: int((run_dir / f"{name}.pid").read_text())
        for name in ("livekit", "omni_dev", "token_server", "agent")
    }
    assert all((run_dir / f"{name}.log").stat().st_size > 0 for name in pids)
    for pid in pids.values():
        assert os.getpgid(pid) == pid  # each service leads its own process group

    # the stack works end to end: a token from its token server joins its LiveKit
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as s:
        async with s.post(f"{web_url}api/token", json={"room": "stack", "identity": "u1"}) as r:
            assert r.status == 200
            grant = await r.json()
        async with s.get(f"http://127.0.0.1:{env['OMNI_DEV_PORT']}/v1/models") as r:
            assert r.status == 200
    assert grant["url"] == f"ws://127.0.0.1:{env['LIVEKIT_PORT']}"
    room = rtc.Room()
    await asyncio.wait_for(room.connect(grant["url"], grant["token"]), 20)
    assert room.name == "stack"
    await room.disconnect()

    # a second stack on the same ports is refused with a clear message
    clash = run_script({**env, "STREAMTALK_OUTPUT": str(tmp_path / "other")}, "start", timeout=60)
    assert clash.returncode != 0
    assert f"port 127.0.0.1:{env['LIVEKIT_PORT']} is already taken" in clash.stderr

    # starting again with the same run dir is a no-op
    again = run_script(env, "start", timeout=60)
    assert again.returncode == 0 and "already running" in again.stderr

    stopped = run_script(env, "stop", timeout=60)
    assert stopped.returncode == 0, stopped.stderr
    assert not any(alive(pid) for pid in pids.values())
    assert not list(run_dir.glob("*.pid"))
    status = run_script(env, "status", timeout=30)
    assert status.returncode == 0
    assert all(line.split()[1] == "stopped" for line in status.stdout.splitlines())


def test_status_reports_a_dead_service(stack_env: dict[str, str]) -> None:
    env = {**stack_env, "OMNI_BASE_URL": "http://127.0.0.1:9/v1"}  # external backend: not started
    started = run_script(env, "start")
    assert started.returncode == 0, started.stderr[-3000:]
    assert "local dev backend not started" in started.stderr
    run_dir = Path(env["STREAMTALK_OUTPUT"]) / "run"
    assert not (run_dir / "omni_dev.pid").exists()
    pid = int((run_dir / "token_server.pid").read_text())
    os.killpg(pid, signal.SIGKILL)
    for _ in range(50):
        if not alive(pid):
            break
        subprocess.run(["sleep", "0.1"], check=True)
    status = run_script(env, "status", timeout=30)
    assert status.returncode == 1
    assert "token_server  dead (stale pid file" in status.stdout
    assert "livekit       running" in status.stdout
