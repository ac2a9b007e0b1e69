"""scripts/start_all.sh: start, status, port clash, stop that leaves nothing behind, and the
LiveKit keys (scripts/livekit_keys.sh): generated once, kept private, given ones win."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from livekit import api, rtc
from support.infra import LIVEKIT_BIN, REPO_ROOT, free_port, require, service_env

from streamtalk_common.net import free_port_pair

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
        AGENT_METRICS_PORT=str(free_port()),
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
    assert "NOT serving rooms: no nobody-registered agent joined" in stranger.stdout, \
        stranger.stdout

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

    pids = {name: int((run_dir / f"{name}.pid").read_text())
            for name in ("livekit", "token_server")}
    pid = pids["token_server"]
    os.killpg(pid, signal.SIGKILL)
    await wait_gone(pid, 5)
    status = run_script(env, "status", timeout=30)
    assert status.returncode == 1
    assert "token_server  dead (stale pid file" in status.stdout
    assert f"livekit       running (pid {pids['livekit']}), healthy at" in status.stdout, \
        status.stdout

    # one SIGTERM with a participant connected: LiveKit drains (its health route still says
    # OK) until the participant leaves, then exits
    livekit = pids["livekit"]
    room = rtc.Room()
    token = (api.AccessToken(*given).with_identity("stays")
             .with_grants(api.VideoGrants(room_join=True, room="drain")).to_jwt())
    await asyncio.wait_for(room.connect(f"ws://127.0.0.1:{env['LIVEKIT_PORT']}", token), 20)
    try:
        os.kill(livekit, signal.SIGTERM)
        await asyncio.sleep(1.0)
        status = run_script(env, "status", timeout=30)
        assert status.returncode == 1
        assert f"livekit       running (pid {livekit}), answering at" in status.stdout, \
            status.stdout
        assert "but DRAINING: it exits once its participants leave" in status.stdout, status.stdout
    finally:
        await room.disconnect()
    await wait_gone(livekit, 10)
    status = run_script(env, "status", timeout=30)
    assert "livekit       dead (stale pid file" in status.stdout, status.stdout


# ------------------------------------------------------------------ several nodes and workers


async def test_two_livekit_nodes_with_redis_and_a_worker_per_gpu(
    stack_env: dict[str, str], tmp_path: Path
) -> None:
    """LIVEKIT_NODES=2 AGENT_WORKERS=2 on a box whose nvidia-smi lists two GPUs: Redis on
    loopback with a password no command line shows, a node each on its own ports, a worker
    each on its own GPU and node, all under one agent name; the token server names the nodes
    in turn; stop leaves nothing."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nvidia-smi").write_text('#!/bin/sh\n[ "$1" = --query-gpu=index ] || exit 2\n'
                                        'echo 0\necho 1\n')
    (bin_dir / "nvidia-smi").chmod(0o755)
    env = {**stack_env, "LIVEKIT_NODES": "2", "AGENT_WORKERS": "2", "REDIS_PORT": str(free_port()),
           "LIVEKIT_PORT": str(free_port_pair(10)),
           "LIVEKIT_UDP_PORT": str(free_port_pair(10, socket.SOCK_DGRAM)),
           "AGENT_HTTP_PORT": str(free_port_pair(1)), "AGENT_METRICS_PORT": str(free_port_pair(1)),
           "PATH": f"{bin_dir}:{stack_env['PATH']}"}
    nodes = [f"ws://127.0.0.1:{int(env['LIVEKIT_PORT']) + step}" for step in (0, 10)]
    refused = run_script({**env, "AGENT_WORKERS": "0"}, "start", timeout=30)
    assert refused.returncode == 1 \
        and "AGENT_WORKERS=0; valid: 1..64 (one per GPU)" in refused.stderr

    started = run_script(env, "start")
    assert started.returncode == 0, started.stderr[-3000:]
    run_dir = Path(env["STREAMTALK_OUTPUT"]) / "run"
    status = run_script(env, "status", timeout=40)
    assert status.returncode == 0, status.stdout + status.stderr
    lines = {line.split()[0]: line for line in status.stdout.splitlines()}
    assert list(lines) == ["redis", "livekit-1", "livekit-2", "omni_dev", "token_server", "agent-1",
                           "agent-2", "agents"], status.stdout
    assert all("healthy" in lines[n] for n in lines if n != "agents"), status.stdout
    for i, gpu in ((1, "0"), (2, "1")):
        assert "load 0.00 (0 of 8 rooms, 0 of " in lines[f"agent-{i}"] \
            and f"GPU {gpu}" in lines[f"agent-{i}"], status.stdout
        said = (run_dir / f"agent-{i}.log").read_text()
        assert f"agent-{i}: LiveKit {nodes[i - 1]}, GPU {gpu}" in said, said[:2000]
    assert "2 workers; agent streamtalk joined a probe room" in lines["agents"], status.stdout

    # Redis: loopback only, refuses clients without the password, which no command line shows
    password = next(x.split()[1] for x in (run_dir / "redis.conf").read_text().splitlines()
                    if x.startswith("requirepass "))
    assert private_file(run_dir / "redis.conf") and len(bytes.fromhex(password)) == 32
    assert not [c for c in command_lines() if password.encode() in c]
    def redis(password: str, *args: str) -> str:
        return subprocess.run(
            ["redis-cli", "-p", env["REDIS_PORT"], *args], capture_output=True, text=True,
            timeout=10, env={**env, "REDISCLI_AUTH": password}).stdout.split()

    assert "NOAUTH" in redis("", "ping")
    assert redis(password, "config", "get", "bind") == ["bind", "127.0.0.1"]
    assert redis(password, "config", "get", "save") == ["save"]  # nothing kept on disk
    assert redis(password, "hlen", "nodes") == ["2"]  # both LiveKit nodes registered in it

    # each token names a live node, the two in turn
    web_url = f"http://127.0.0.1:{env['TOKEN_SERVER_PORT']}/api/token"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as s:
        urls = []
        for _ in range(2):
            async with s.post(web_url, json={"room": "nodes"}) as r:
                assert r.status == 200
                urls.append((await r.json())["url"])
    assert sorted(urls) == nodes

    pids = [int(f.read_text()) for f in run_dir.glob("*.pid")]
    assert len(pids) == 7
    stopped = run_script(env, "stop", timeout=90)
    assert stopped.returncode == 0, stopped.stderr
    assert not any(alive(pid) for pid in pids) and not list(run_dir.glob("*.pid"))


# ------------------------------------------------------------------ vLLM and the TTS server

STANDIN = REPO_ROOT / "tests" / "support" / "vllm_standin.py"
GPU_TOTAL_MIB = 143771  # what the nvidia-smi stand-in reports: an H200
VLLM_NEEDS_MIB = 86263  # 0.6 of it, rounded up


def tagged(tag: str) -> list[int]:
    """Processes whose environment carries the service tag start_all.sh gives a service."""
    found = []
    for f in Path("/proc").glob("[0-9]*/environ"):
        try:
            if f"STREAMTALK_SERVICE={tag}".encode() in f.read_bytes().split(b"\0") \
                    and alive(int(f.parent.name)):
                found.append(int(f.parent.name))
        except OSError:
            pass
    return found


@pytest.fixture
def vllm_env(stack_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """The stack with OMNI_BACKEND=vllm, where `vllm` is tests/support/vllm_standin.py (the dev
    backend behind vLLM's command line) and nvidia-smi reports an H200 with
    NVIDIA_SMI_FREE_MIB free."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "vllm").write_text(f'#!/bin/sh\nexec "{sys.executable}" "{STANDIN}" "$@"\n')
    (bin_dir / "nvidia-smi").write_text(
        "#!/bin/sh\n"
        'case "$*" in\n'
        f'  *--query-gpu=*) echo "NVIDIA H200, {GPU_TOTAL_MIB}, $NVIDIA_SMI_FREE_MIB" ;;\n'
        '  *--query-compute-apps=*) echo "4242, python3, 60000 MiB" ;;\n'
        "  *) exit 2 ;;\n"
        "esac\n"
    )
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    return {
        **stack_env,
        "OMNI_BACKEND": "vllm",
        "VLLM_BIN": str(bin_dir / "vllm"),
        "VLLM_PORT": str(free_port()),
        "PATH": f"{bin_dir}:{stack_env['PATH']}",
        "NVIDIA_SMI_FREE_MIB": str(GPU_TOTAL_MIB - 1000),
        "STOP_GRACE_S": "3",
    }


async def test_vllm_and_the_tts_server_run_under_the_stack(vllm_env: dict[str, str]) -> None:
    env = {**vllm_env, "VLLM_STANDIN": "orphan", "STREAMTALK_TTS_SERVER": "1",
           "TTS_PORT": str(free_port())}
    run_dir = Path(env["STREAMTALK_OUTPUT"]) / "run"
    vllm_url = f"http://127.0.0.1:{env['VLLM_PORT']}/v1"
    stray = None
    try:
        started = run_script(env, "start")
        assert started.returncode == 0, started.stderr[-3000:]
        assert f"has {GPU_TOTAL_MIB - 1000} MiB free; vLLM takes {VLLM_NEEDS_MIB} MiB" \
            in started.stderr
        assert f"vllm healthy at {vllm_url}/models" in started.stderr
        assert f"Omni backend: {vllm_url}   (vllm)" in started.stdout
        assert f"TTS server:   http://127.0.0.1:{env['TTS_PORT']}/" in started.stdout
        assert not (run_dir / "omni_dev.pid").exists()

        status = run_script(env, "status", timeout=30)
        assert status.returncode == 0, status.stdout + status.stderr
        names = [line.split()[0] for line in status.stdout.splitlines()]
        assert names == ["livekit", "vllm", "tts_server", "token_server", "agent"], status.stdout
        assert all("healthy" in line for line in status.stdout.splitlines()), status.stdout

        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as s:
            async with s.get(f"{vllm_url}/models") as r:
                assert r.status == 200 \
                    and [m["id"] for m in (await r.json())["data"]] == ["qwen3-omni"]
            speech = {"text": "Hello there.", "speaker": "serena"}
            async with s.post(f"http://127.0.0.1:{env['TTS_PORT']}/synthesize", json=speech) as r:
                assert r.status == 200 and r.content_type == "audio/wav"
                assert len(await r.read()) > 44 + 24000  # over half a second of 16-bit audio

        # the engine core stand-in left vLLM's process group and ignores SIGTERM
        vllm_pid = int((run_dir / "vllm.pid").read_text())
        (core,) = [pid for pid in tagged(str(run_dir / "vllm")) if os.getpgid(pid) != vllm_pid]
        assert Path(f"/proc/{core}/comm").read_text().strip() == "VLLM::EngineCor"
        # a vLLM process this stack did not start is reported, never signalled
        stray = subprocess.Popen([sys.executable, str(STANDIN), "VLLM::EngineCore"],
                                 start_new_session=True)

        stopped = run_script(env, "stop", timeout=60)
        assert stopped.returncode == 0, stopped.stderr
        assert f"vllm: still alive after 3 s, SIGKILL: {core} (VLLM::EngineCor" in stopped.stderr, \
            stopped.stderr
        assert "vllm: left alone, not started by this stack" in stopped.stderr \
            and f"{stray.pid} (" in stopped.stderr
        assert not alive(core) and not tagged(str(run_dir / "vllm")) \
            and not tagged(str(run_dir / "tts_server"))
        assert alive(stray.pid)
        assert not list(run_dir.glob("*.pid"))
    finally:
        if stray is not None:
            stray.kill()
            stray.wait()


def test_vllm_that_never_answers_is_stopped_with_a_clear_error(vllm_env: dict[str, str]) -> None:
    env = {**vllm_env, "VLLM_STANDIN": "never-healthy", "VLLM_START_TIMEOUT_S": "12"}
    started = run_script(env, "start", timeout=120)
    assert started.returncode == 1, started.stderr[-3000:]
    url = f"http://127.0.0.1:{env['VLLM_PORT']}/v1/models"
    # progress while it loads
    assert f"vllm: waiting for {url}, 1" in started.stderr, started.stderr
    assert "of 12 s; its log says: Loading safetensors checkpoint shards" in started.stderr
    assert f"vllm not healthy at {url} after 12s, stopped it" in started.stderr
    assert "raise VLLM_START_TIMEOUT_S" in started.stderr
    run_dir = Path(env["STREAMTALK_OUTPUT"]) / "run"
    assert not tagged(str(run_dir / "vllm")) and not (run_dir / "vllm.pid").exists()
    assert not (run_dir / "agent.pid").exists()


def test_vllm_is_refused_when_the_gpu_lacks_memory(vllm_env: dict[str, str]) -> None:
    started = run_script({**vllm_env, "NVIDIA_SMI_FREE_MIB": "20000"}, "start", timeout=120)
    assert started.returncode == 1
    assert (
        f"vllm needs {VLLM_NEEDS_MIB} MiB free on GPU 0 (NVIDIA H200): "
        f"VLLM_GPU_MEMORY_UTILIZATION=0.6 of its {GPU_TOTAL_MIB} MiB, but only 20000 MiB are free; "
        "in use by:\n4242, python3, 60000 MiB"
    ) in started.stderr, started.stderr
    assert "lower VLLM_GPU_MEMORY_UTILIZATION" in started.stderr
    assert not (Path(vllm_env["STREAMTALK_OUTPUT"]) / "run" / "vllm.pid").exists()


@pytest.mark.parametrize(("given", "error"), [
    ({"OMNI_BACKEND": "gpu"},
     "OMNI_BACKEND=gpu; valid: dev (the local dev backend, the default), vllm"),
    ({"OMNI_BACKEND": "external"}, "OMNI_BACKEND=external needs OMNI_BASE_URL"),
    ({"OMNI_BACKEND": "vllm", "OMNI_BASE_URL": "http://10.0.0.9:8000/v1"},
     "OMNI_BACKEND=vllm serves at http://127.0.0.1:8000/v1, but "
     "OMNI_BASE_URL=http://10.0.0.9:8000/v1"),
    ({"OMNI_BACKEND": "vllm", "VLLM_GPU_MEMORY_UTILIZATION": "1.5"},
     "VLLM_GPU_MEMORY_UTILIZATION=1.5; valid: a fraction in (0, 1]"),
    ({"OMNI_BACKEND": "vllm", "VLLM_START_TIMEOUT_S": "soon"},
     "VLLM_START_TIMEOUT_S=soon; valid: whole seconds > 0"),
])  # fmt: skip
def test_backend_settings_that_cannot_work_are_refused(
    tmp_path: Path, given: dict[str, str], error: str
) -> None:
    env = service_env(STREAMTALK_OUTPUT=str(tmp_path / "output"), STREAMTALK_SKIP_INSTALL="1",
                      **given)
    for command in ("start", "status"):
        said = run_script(env, command, timeout=30)
        assert said.returncode == 1 and error in said.stderr, said.stderr
    assert not (tmp_path / "output" / "run").exists()  # refused before anything started


def test_an_engine_start_timeout_that_cannot_work_is_refused(tmp_path: Path) -> None:
    env = service_env(STREAMTALK_OUTPUT=str(tmp_path / "output"), STREAMTALK_SKIP_INSTALL="1",
                      TTS_START_TIMEOUT_S="2m")
    said = run_script(env, "start", timeout=30)
    assert said.returncode == 1 \
        and "TTS_START_TIMEOUT_S=2m; valid: whole seconds > 0" in said.stderr, said.stderr
    assert not (tmp_path / "output" / "run").exists()


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
    return service_env(STREAMTALK_HOME=str(tmp_path / "home"),
                       STREAMTALK_OUTPUT=str(tmp_path / "out"))


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
    ({"LIVEKIT_API_SECRET": "s" * 40}, None, None,
     "set both LIVEKIT_API_KEY and LIVEKIT_API_SECRET"),
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
