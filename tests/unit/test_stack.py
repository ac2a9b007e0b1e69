"""streamtalk_common/stack.py: the services' description, its shell copy of the layout
(scripts/stack_layout.sh), the scripts that exec it, and the process class."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from streamtalk_common import stack
from streamtalk_common.net import free_port
from streamtalk_common.paths import REPO_ROOT
from streamtalk_common.stack import Layout, Service, ServiceProcess

LAYOUTS = [
    {},
    {"AGENT_WORKERS": "3", "LIVEKIT_NODES": "2"},
    {"AGENT_WORKERS": "5", "LIVEKIT_NODES": "3", "LIVEKIT_PORT": "9000", "LIVEKIT_UDP_PORT": "9002",
     "AGENT_HTTP_PORT": "8200", "AGENT_METRICS_PORT": "0", "REDIS_PORT": "6400"},
]
BAD_LAYOUTS = [{"AGENT_WORKERS": "0"}, {"AGENT_WORKERS": "65"}, {"LIVEKIT_NODES": "9"},
               {"AGENT_WORKERS": "12", "AGENT_HTTP_PORT": "8081", "AGENT_METRICS_PORT": "8091"}]


def _bash(script: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-c", f". scripts/stack_layout.sh\n{script}"], cwd=REPO_ROOT,
                          env={**stack.service_env(), **env}, capture_output=True, text=True,
                          timeout=30)


def _shell_layout(env: dict[str, str]) -> list[str]:
    out = _bash("""check_layout
for ((i = 1; i <= LIVEKIT_NODES; i++)); do
    echo "$(livekit_service $i) $(livekit_port $i) $(livekit_udp_port $i) $(livekit_node_url $i)"
done
for ((i = 1; i <= AGENT_WORKERS; i++)); do
    echo "$(agent_service $i) $(agent_http_port $i) $(agent_metrics_port $i)"
done
echo "redis $REDIS_PORT"
""", env)
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


@pytest.mark.parametrize("env", LAYOUTS, ids=["default", "2-nodes-3-workers", "moved-ports"])
def test_the_shell_layout_is_the_python_layout(env: dict[str, str]) -> None:
    layout = Layout.from_env(env)
    python = [f"{layout.livekit_service(i)} {' '.join(map(str, layout.livekit_ports(i)))} "
              f"{layout.livekit_url(i)}" for i in range(1, layout.livekit_nodes + 1)]
    python += [f"{layout.agent_service(i)} {' '.join(map(str, layout.agent_ports(i)))}"
               for i in range(1, layout.agent_workers + 1)]
    python.append(f"redis {layout.redis_port}")
    assert _shell_layout(env) == python


@pytest.mark.parametrize("env", BAD_LAYOUTS,
                         ids=["no-workers", "65-workers", "9-nodes", "ports-overlap"])
def test_both_layouts_refuse_the_same_bad_layouts(env: dict[str, str]) -> None:
    assert _bash("check_layout", env).returncode != 0
    with pytest.raises(ValueError, match="valid|overlap"):
        Layout.from_env(env)


def test_the_layout_names_its_services_and_nodes() -> None:
    layout = Layout(agent_workers=3, livekit_nodes=2)
    assert layout.services() == ["redis", "livekit-1", "livekit-2", "agent-1", "agent-2", "agent-3"]
    assert [layout.agent_node(i) for i in (1, 2, 3)] == [1, 2, 1]
    assert Layout().services() == ["livekit", "agent"]
    with pytest.raises(ValueError, match=r"worker index 4; valid: 1..3"):
        layout.agent_ports(4)
    with pytest.raises(ValueError, match="LIVEKIT_PORT=x; valid: a whole number"):
        Layout.from_env({"LIVEKIT_PORT": "x"})


def test_a_deployed_livekit_node_joins_the_redis_of_the_run(tmp_path: Path) -> None:
    env = {"LIVEKIT_NODES": "2", "STREAMTALK_OUTPUT": str(tmp_path),
           "LIVEKIT_SERVER_KEY_FILE": "/keys.yaml", "LIVEKIT_NODE_IP": "10.0.0.5"}
    with pytest.raises(ValueError, match="no Redis password"):
        stack.deployed("livekit", 2, env)
    password = stack.write_redis_conf(tmp_path / "run" / "redis.conf")
    assert stack.write_redis_conf(tmp_path / "run" / "redis.conf") == password  # kept per run
    assert stat.S_IMODE((tmp_path / "run" / "redis.conf").stat().st_mode) == 0o600
    node = stack.deployed("livekit", 2, env)
    assert node.name == "livekit-2"
    assert node.argv[1:] == ["--config", str(REPO_ROOT / "scripts" / "livekit-dev.yaml"),
                             "--bind", "127.0.0.1", "--node-ip", "10.0.0.5", "--port", "7890",
                             "--udp-port", "7892", "--key-file", "/keys.yaml",
                             "--redis-host", "127.0.0.1:6379"]
    assert node.env == {"REDIS_PASSWORD": password}
    assert node.health_url == "http://127.0.0.1:7890/"
    with pytest.raises(ValueError, match="LIVEKIT_SERVER_KEY_FILE is not set"):
        stack.deployed("livekit", 1, {"STREAMTALK_OUTPUT": str(tmp_path)})


def test_a_deployed_agent_worker_gets_its_name_ports_node_and_gpu() -> None:
    env = {"AGENT_WORKERS": "3", "LIVEKIT_NODES": "2", "CUDA_VISIBLE_DEVICES": "5,7"}
    worker = stack.deployed("agent", 2, env)
    assert worker.argv == [sys.executable, "-m", "agent", "start"]
    assert worker.env == {"AGENT_WORKER_NAME": "agent-2", "AGENT_HTTP_PORT": "8082",
                          "AGENT_METRICS_PORT": "8092", "LIVEKIT_URL": "ws://127.0.0.1:7890",
                          "CUDA_VISIBLE_DEVICES": "7"}
    assert stack.deployed("agent", 3, env).env["CUDA_VISIBLE_DEVICES"] == "5"  # round-robin
    single = stack.deployed("agent", 1, {"CUDA_VISIBLE_DEVICES": ""})  # no GPU, one node
    assert single.env == {"AGENT_WORKER_NAME": "agent", "AGENT_HTTP_PORT": "8081",
                          "AGENT_METRICS_PORT": "8091"}
    assert single.health_url == "http://127.0.0.1:8081/"
    assert single.ready_line == stack.REGISTERED_LINE


def test_the_other_deployed_services_follow_their_settings(tmp_path: Path) -> None:
    env = {"OMNI_DEV_PORT": "8100", "TOKEN_SERVER_HOST": "0.0.0.0", "TOKEN_SERVER_PORT": "3100",
           "TTS_PORT": "9100", "TTS_DEEP_STREAM_MODEL_DIR": "/ckpt",
           "STREAMTALK_OUTPUT": str(tmp_path)}
    assert stack.deployed("omni_dev", 1, env).argv[-4:] == ["--host", "127.0.0.1", "--port", "8100"]
    token = stack.deployed("token_server", 1, env)
    assert token.argv[-4:] == ["--host", "0.0.0.0", "--port", "3100"]
    assert token.health_url == "http://127.0.0.1:3100/healthz"  # a wildcard bind answers locally
    assert stack.deployed("tts_server", 1, env).argv[-6:] == [
        "--model-dir", "/ckpt", "--host", "127.0.0.1", "--port", "9100"]
    redis = stack.deployed("redis", 1, env)
    assert redis.argv[:6] == ["redis-server", str(tmp_path / "run" / "redis.conf"), "--bind",
                              "127.0.0.1", "--port", "6379"]
    with pytest.raises(ValueError, match="valid: livekit, redis, agent"):
        stack.deployed("vllm", 1, env)


def _recorder(tmp_path: Path) -> Path:
    """A stand-in for the LiveKit binary that prints how it was called."""
    path = tmp_path / "server"
    path.write_text('#!/bin/sh\nprintf "%s\\n" "$@"\necho "REDIS_PASSWORD=${REDIS_PASSWORD:-}"\n')
    path.chmod(0o755)
    return path


def test_livekit_node_sh_execs_the_described_node(tmp_path: Path) -> None:
    redis_port = free_port()
    env = {**stack.service_env(), "LIVEKIT_SERVER_BIN": str(_recorder(tmp_path)),
           "LIVEKIT_SERVER_KEY_FILE": "/keys.yaml", "STREAMTALK_OUTPUT": str(tmp_path),
           "LIVEKIT_NODES": "2", "REDIS_PORT": str(redis_port)}
    conf = tmp_path / "run" / "redis.conf"
    password = stack.write_redis_conf(conf)
    (tmp_path / "redis").mkdir()
    # a node of several waits for the deployed Redis to answer before it starts
    redis = ServiceProcess(stack.redis(redis_port, conf, tmp_path / "redis"),
                           tmp_path / "redis.log").wait_healthy()
    try:
        ran = subprocess.run(["bash", "scripts/livekit_node.sh", "2"], cwd=REPO_ROOT, env=env,
                             capture_output=True, text=True, timeout=60)
    finally:
        redis.stop()
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.splitlines() == [*stack.deployed("livekit", 2, env).argv[1:],
                                       f"REDIS_PASSWORD={password}"]
    shown = subprocess.run(
        [sys.executable, "-m", "streamtalk_common.stack", "show", "livekit", "2"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert shown.stdout.splitlines() == [str(_recorder(tmp_path)), *ran.stdout.splitlines()[:-1],
                                         "REDIS_PASSWORD=(secret)"]
    bad = subprocess.run(["bash", "scripts/livekit_node.sh", "3"], cwd=REPO_ROOT, env=env,
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "node index 3; valid: 1..2" in bad.stderr


# --------------------------------------------------------------------------- the process class


def _service(code: str, ready_line: str = "ready") -> Service:
    return Service("probe", [sys.executable, "-c", code], {"PROBE": "1"}, ready_line=ready_line)


def test_a_service_is_healthy_once_its_line_is_logged_and_stops_with_its_children(
        tmp_path: Path) -> None:
    code = ("import os, subprocess, sys, time; assert os.environ['PROBE'] == '1'; "
            "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
            "print('child', child.pid, flush=True); time.sleep(0.5); print('ready', flush=True); "
            "time.sleep(60)")
    proc = ServiceProcess(_service(code), tmp_path / "probe.log").wait_healthy(20)
    child = int(proc.log_text().split()[1])
    assert os.getpgid(child) == proc.proc.pid  # its own group, children included
    proc.stop(timeout_s=5)
    assert proc.proc.returncode is not None
    with pytest.raises(ProcessLookupError):
        for _ in range(50):  # the child is reaped by init shortly after
            os.kill(child, 0)
            subprocess.run(["sleep", "0.1"], check=True)


def test_a_service_that_dies_or_never_gets_healthy_says_why_with_its_log(tmp_path: Path) -> None:
    dies = ServiceProcess(_service("print('no model here'); raise SystemExit(3)"),
                          tmp_path / "dies.log")
    died = r"(?s)probe exited with 3 before health \('ready'\).*no model here"
    with pytest.raises(RuntimeError, match=died):
        dies.wait_healthy(20)
    dies.stop()
    slow = ServiceProcess(_service("import time; print('loading', flush=True); time.sleep(60)"),
                          tmp_path / "slow.log")
    with pytest.raises(RuntimeError, match=r"(?s)probe: no health \('ready'\) after 2 s.*loading"):
        slow.wait_healthy(2)
    assert slow.proc.returncode is not None  # stopped


def test_a_killed_service_restarts_as_described(tmp_path: Path) -> None:
    code = "import time; print('ready', flush=True); time.sleep(60)"
    first = ServiceProcess(_service(code), tmp_path / "probe.log").wait_healthy(20)
    again = first.killed_and_restarted()
    try:
        assert first.proc.returncode == -9 and again.alive()
        assert again.log_path == tmp_path / "probe-restarted.log" and again.env["PROBE"] == "1"
    finally:
        again.stop()


def test_service_env_scrubs_a_deployment_s_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIVEKIT_URL", "ws://elsewhere")
    monkeypatch.setenv("AGENT_WORKERS", "4")
    env = stack.service_env(OMNI_MODEL="m")
    assert "LIVEKIT_URL" not in env and "AGENT_WORKERS" not in env
    assert (env["OMNI_MODEL"], env["PYTHONUNBUFFERED"]) == ("m", "1")
