"""scripts/start_all.sh: start, status, port clash, stop that leaves nothing behind, and the
LiveKit keys (scripts/livekit_keys.sh): generated once, kept private, given ones win."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from infra_fixtures import LIVEKIT_BIN, REPO_ROOT, free_port, require, service_env
from livekit import api, rtc

SCRIPT = REPO_ROOT / "scripts" / "start_all.sh"
KEYS_SCRIPT = REPO_ROOT / "scripts" / "livekit_keys.sh"
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


def command_lines() -> list[bytes]:
    """The command line of every process on the machine, as `ps` shows it to anyone."""
    lines = []
    for f in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            lines.append(f.read_bytes().replace(b"\0", b" "))
        except OSError:  # gone meanwhile
            pass
    return lines


def private_file(path: Path) -> bool:
    return stat.S_IMODE(path.stat().st_mode) == 0o600


def keys_in_file(path: Path) -> tuple[str, str]:
    (line,) = [x for x in path.read_text().splitlines() if x.strip() and not x.startswith("#")]
    key, secret = line.split(":", 1)
    return key, secret.strip().strip('"')


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"


async def wait_gone(pid: int, timeout_s: float) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while alive(pid) and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.1)


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
        LIVEKIT_KEY_FILE=str(tmp_path / "livekit-keys.yaml"),  # not the user's own keys
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

    # the keys were generated into a private file, and their secret shows nowhere
    key_file = Path(env["LIVEKIT_KEY_FILE"])
    key, secret = keys_in_file(key_file)
    assert private_file(key_file) and len(bytes.fromhex(secret)) >= 32
    assert f"API key {key}" in started.stdout
    assert not [c for c in command_lines() if secret.encode() in c]
    assert any(f"--key-file {key_file}".encode() in c for c in command_lines())

    status = run_script(env, "status", timeout=30)
    assert status.returncode == 0, status.stdout + status.stderr
    lines = status.stdout.splitlines()
    assert len(lines) == 4 and all("healthy" in line for line in lines), status.stdout
    assert "joined a probe room" in lines[-1], status.stdout  # LiveKit brought the agent in
    # a worker LiveKit does not know under the name asked for: its health route still says
    # OK, the probe says no agent comes
    stranger = run_script({**env, "LIVEKIT_AGENT_NAME": "nobody-registered"}, "status", timeout=40)
    assert stranger.returncode == 1, stranger.stdout + stranger.stderr
    assert "NOT serving rooms: no nobody-registered agent joined" in stranger.stdout, stranger.stdout

    run_dir = Path(env["STREAMTALK_OUTPUT"]) / "run"
    said = started.stdout + started.stderr + status.stdout + status.stderr
    said += "".join(log.read_text(errors="replace") for log in run_dir.glob("*.log"))
    assert secret not in said
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

    # starting again with the same run dir is a no-op, with the same keys
    again = run_script(env, "start", timeout=60)
    assert again.returncode == 0 and "already running" in again.stderr
    assert keys_in_file(key_file) == (key, secret) and secret not in again.stdout + again.stderr

    stopped = run_script(env, "stop", timeout=60)
    assert stopped.returncode == 0, stopped.stderr
    assert not any(alive(pid) for pid in pids.values())
    assert not list(run_dir.glob("*.pid"))
    status = run_script(env, "status", timeout=30)
    assert status.returncode == 0
    assert all(line.split()[1] == "stopped" for line in status.stdout.splitlines())


async def test_given_keys_win_and_status_reports_dead_and_draining_services(
    stack_env: dict[str, str],
) -> None:
    given = ("given-key", "given-secret-" + os.urandom(24).hex())
    env = {
        **stack_env,
        "OMNI_BASE_URL": "http://127.0.0.1:9/v1",  # external backend: not started
        "LIVEKIT_API_KEY": given[0],
        "LIVEKIT_API_SECRET": given[1],
    }
    started = run_script(env, "start")
    assert started.returncode == 0, started.stderr[-3000:]
    assert "local dev backend not started" in started.stderr
    run_dir = Path(env["STREAMTALK_OUTPUT"]) / "run"
    assert not (run_dir / "omni_dev.pid").exists()

    # LiveKit took the given keys from a private file of this run, not its command line
    assert not Path(env["LIVEKIT_KEY_FILE"]).exists()
    assert keys_in_file(run_dir / "livekit-keys.yaml") == given
    assert private_file(run_dir / "livekit-keys.yaml")
    assert not [c for c in command_lines() if given[1].encode() in c]
    lk = api.LiveKitAPI(f"http://127.0.0.1:{env['LIVEKIT_PORT']}", *given)
    try:
        await asyncio.wait_for(lk.room.list_rooms(api.ListRoomsRequest()), 10)
    finally:
        await lk.aclose()

    pids = {name: int((run_dir / f"{name}.pid").read_text()) for name in ("livekit", "token_server")}
    pid = pids["token_server"]
    os.killpg(pid, signal.SIGKILL)
    await wait_gone(pid, 5)
    status = run_script(env, "status", timeout=30)
    assert status.returncode == 1
    assert "token_server  dead (stale pid file" in status.stdout
    assert f"livekit       running (pid {pids['livekit']}), healthy at" in status.stdout, status.stdout

    # one SIGTERM with a participant connected: LiveKit drains (its health route still says
    # OK) until the participant leaves, then exits
    livekit = pids["livekit"]
    room = rtc.Room()
    token = (api.AccessToken(*given).with_identity("stays").with_grants(api.VideoGrants(room_join=True, room="drain"))
             .to_jwt())
    await asyncio.wait_for(room.connect(f"ws://127.0.0.1:{env['LIVEKIT_PORT']}", token), 20)
    try:
        os.kill(livekit, signal.SIGTERM)
        await asyncio.sleep(1.0)
        status = run_script(env, "status", timeout=30)
        assert status.returncode == 1
        assert f"livekit       running (pid {livekit}), answering at" in status.stdout, status.stdout
        assert "but DRAINING: it exits once its participants leave" in status.stdout, status.stdout
    finally:
        await room.disconnect()
    await wait_gone(livekit, 10)
    status = run_script(env, "status", timeout=30)
    assert "livekit       dead (stale pid file" in status.stdout, status.stdout


# ------------------------------------------------------------------ the key file alone


def keys_seen(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """What a program run by scripts/livekit_keys.sh gets: key, secret, LiveKit's key file."""
    show = 'printf "%s\n" "$LIVEKIT_API_KEY" "$LIVEKIT_API_SECRET" "$LIVEKIT_SERVER_KEY_FILE"'
    return subprocess.run(
        ["bash", str(KEYS_SCRIPT), "sh", "-c", show],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=30,
    )  # fmt: skip


@pytest.fixture
def keys_env(tmp_path: Path) -> dict[str, str]:
    return service_env(STREAMTALK_HOME=str(tmp_path / "home"), STREAMTALK_OUTPUT=str(tmp_path / "out"))


def test_keys_are_generated_once_into_the_cache_root(keys_env: dict[str, str]) -> None:
    key_file = Path(keys_env["STREAMTALK_HOME"]) / "livekit-keys.yaml"
    first = keys_seen(keys_env)
    assert first.returncode == 0, first.stderr
    assert f"generated LiveKit API keys in {key_file}" in first.stderr
    key, secret, server_file = first.stdout.splitlines()
    assert key.startswith("API") and len(bytes.fromhex(secret)) >= 32
    assert server_file == str(key_file) and private_file(key_file)
    assert keys_in_file(key_file) == (key, secret)
    assert secret not in first.stderr

    written = key_file.read_bytes()
    second = keys_seen(keys_env)
    assert second.returncode == 0 and second.stdout == first.stdout
    assert "generated" not in second.stderr and key_file.read_bytes() == written


def test_given_keys_reach_livekit_through_a_file_of_the_run(keys_env: dict[str, str]) -> None:
    seen = keys_seen({**keys_env, "LIVEKIT_API_KEY": "mine", "LIVEKIT_API_SECRET": "s" * 40})
    assert seen.returncode == 0, seen.stderr
    server_file = Path(keys_env["STREAMTALK_OUTPUT"]) / "run" / "livekit-keys.yaml"
    assert seen.stdout.splitlines() == ["mine", "s" * 40, str(server_file)]
    assert private_file(server_file) and keys_in_file(server_file) == ("mine", "s" * 40)
    assert not (Path(keys_env["STREAMTALK_HOME"]) / "livekit-keys.yaml").exists()


@pytest.mark.parametrize(("given", "content", "mode", "error"), [
    ({"LIVEKIT_API_KEY": "mine"}, None, None, "set both LIVEKIT_API_KEY and LIVEKIT_API_SECRET"),
    ({"LIVEKIT_API_SECRET": "s" * 40}, None, None, "set both LIVEKIT_API_KEY and LIVEKIT_API_SECRET"),
    ({"LIVEKIT_API_KEY": "mine", "LIVEKIT_API_SECRET": 'a"b'}, None, None, "no spaces, quotes"),
    ({}, 'k: "s"\n', 0o644, "may be read by others (mode 644)"),
    ({}, "k: s\nk2: s2\n", 0o600, 'must hold one line KEY: "SECRET"'),
    ({}, "", 0o600, 'must hold one line KEY: "SECRET"'),
])  # fmt: skip
def test_keys_that_cannot_be_used_are_refused(
    keys_env: dict[str, str], given: dict[str, str], content: str | None, mode: int | None,
    error: str,
) -> None:
    key_file = Path(keys_env["STREAMTALK_HOME"]) / "livekit-keys.yaml"
    if content is not None:
        key_file.parent.mkdir(parents=True)
        key_file.write_text(content)
        key_file.chmod(mode)  # type: ignore[arg-type]
    seen = keys_seen({**keys_env, **given})
    assert seen.returncode == 1 and seen.stdout == "", seen.stdout
    assert error in seen.stderr, seen.stderr
