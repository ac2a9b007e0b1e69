"""Start the real stack for AutoRTC on loopback ports: LiveKit server (or several nodes
sharing a Redis), dev Omni backend, agent worker(s) (tiny checkpoint on CPU). Each service
runs in its own process group and is stopped (SIGTERM, then SIGKILL) by `Stack.stop()`."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from streamtalk_common.gpu_assignment import assign, nvidia_smi_indices, visible_gpus
from streamtalk_common.livekit_keys import write_key_file
from streamtalk_common.net import free_port
from streamtalk_common.paths import REPO_ROOT, cache_root

_SCRUB = ("LIVEKIT_", "TOKEN_", "OMNI_", "NODE_IP", "UDP_PORT", "REDIS_")


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUB)}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


class Service:
    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(log_path, "wb")  # closed in stop()
        self.proc = subprocess.Popen(argv, cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL,
                                     stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def wait_until(self, ok, timeout_s: float, what: str) -> None:  # noqa: ANN001
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.proc.returncode}) before {what}; "
                                   f"log {self.log_path}:\n{self.tail()}")
            if ok():
                return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"{self.name}: no {what} after {timeout_s:.0f} s; log "
                           f"{self.log_path}:\n{self.tail()}")

    def stop(self, timeout_s: float = 15.0) -> None:
        if self.proc.poll() is None:
            for sig, wait in ((signal.SIGTERM, 2.0), (signal.SIGTERM, timeout_s)):
                try:
                    os.killpg(self.proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.proc.wait(timeout=wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
            if self.proc.poll() is None:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=10)
        self._log.close()


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


@dataclass
class Stack:
    livekit_url: str
    api_key: str
    api_secret: str = field(repr=False)
    agent_name: str = "streamtalk"
    agent_output: Path = Path("output")
    services: list[Service] = field(default_factory=list)
    livekit_urls: list[str] = field(default_factory=list)  # every node (livekit_url is the first)

    def stop(self) -> None:
        for s in reversed(self.services):
            s.stop()

    def agent_log(self) -> str:
        """The first worker's log tail."""
        for s in self.services:
            if s.name.startswith("agent"):
                return s.tail(60)
        return ""


def start_redis(log_dir: Path) -> tuple[Service, int, str]:
    """redis-server on a free loopback port for several LiveKit nodes: its service, port
    and password (from a mode-600 config file, as scripts/redis_server.sh runs it)."""
    if shutil.which("redis-server") is None:
        raise RuntimeError("redis-server missing (several LiveKit nodes share it): "
                           "run scripts/install_system_deps.sh")
    port, password = free_port(), secrets.token_hex(32)
    conf = log_dir / f"redis-{port}.conf"
    conf.touch(mode=0o600)
    conf.write_text(f"requirepass {password}\n")
    redis = Service("redis", ["redis-server", str(conf), "--bind", "127.0.0.1", "--port", str(port),
                              "--save", "", "--appendonly", "no", "--dir", str(log_dir)],
                    clean_env(), log_dir / "redis.log")

    def pong() -> bool:
        return subprocess.run(
            ["redis-cli", "-p", str(port), "ping"], capture_output=True, text=True, timeout=5,
            env={**os.environ, "REDISCLI_AUTH": password}).stdout.strip() == "PONG"

    redis.wait_until(pong, 30, "PONG")
    return redis, port, password


def start_stack(log_dir: Path, agent_output: Path, agent_env: dict[str, str] | None = None,
                omni_env: dict[str, str] | None = None, nodes: int = 1, workers: int = 1) -> Stack:
    """LiveKit server(s) + dev backend + agent worker(s); raises with the log tail on failure.
    With `nodes` > 1 the nodes share rooms and workers through a Redis; worker i registers
    with node i mod `nodes` as `agent-<i+1>` (one worker: `agent`), all under one agent name
    and writing to one `agent_output`. With AUTORTC_TTS_DEVICE other than cpu, worker i runs
    on the i-th GPU (streamtalk_common/gpu_assignment.py)."""
    from tts_engine.checkpoint import ensure_checkpoint

    services: list[Service] = []
    try:
        lk_bin = Path(os.environ.get("LIVEKIT_SERVER_BIN") or cache_root() / "bin" / "server")
        if not os.access(lk_bin, os.X_OK):
            raise RuntimeError(f"LiveKit server missing at {lk_bin}: "
                               "run scripts/install_livekit_server.sh")
        key, secret = "autortc" + secrets.token_hex(4), secrets.token_urlsafe(32)
        log_dir.mkdir(parents=True, exist_ok=True)
        redis_args: list[str] = []
        lk_env = clean_env()
        if nodes > 1:
            redis, redis_port, lk_env["REDIS_PASSWORD"] = start_redis(log_dir)
            services.append(redis)
            redis_args = ["--redis-host", f"127.0.0.1:{redis_port}"]
        urls = []
        for n in range(1, nodes + 1):
            port, udp = free_port(), free_port(socket.SOCK_DGRAM)
            key_file = write_key_file(log_dir / f"livekit-keys-{port}.yaml", key, secret)
            name = "livekit" if nodes == 1 else f"livekit-{n}"
            lk = Service(name, [str(lk_bin),
                                "--config", str(REPO_ROOT / "scripts" / "livekit-dev.yaml"),
                                "--bind", "127.0.0.1", "--node-ip", "127.0.0.1",
                                "--port", str(port), "--udp-port", str(udp),
                                "--key-file", str(key_file), *redis_args],
                         lk_env, log_dir / f"{name}.log")
            services.append(lk)
            lk.wait_until(lambda p=port: http_ok(f"http://127.0.0.1:{p}/"), 60, "HTTP answer")
            urls.append(f"ws://127.0.0.1:{port}")
        oport = free_port()
        omni = Service("omni-dev", [sys.executable, "-m", "tools.omni_dev", "--host", "127.0.0.1",
                                    "--port", str(oport)],
                       clean_env(OMNI_DEV_MODEL="qwen3-omni-dev", **(omni_env or {})),
                       log_dir / "omni-dev.log")
        services.append(omni)
        omni.wait_until(lambda: http_ok(f"http://127.0.0.1:{oport}/health"), 120, "health")
        model_dir = ensure_checkpoint(cache_root() / "checkpoints" / "tiny-test", "tiny", seed=0)
        agent_name = "streamtalk-autortc-" + secrets.token_hex(3)
        device = os.environ.get("AUTORTC_TTS_DEVICE", "cpu")
        # on GPUs each worker gets its own, as scripts/agent_worker.sh gives them
        gpus = assign(workers, [] if device == "cpu" else
                      visible_gpus(os.environ.get("CUDA_VISIBLE_DEVICES"), nvidia_smi_indices()))
        agents = []
        for i in range(workers):
            name = "agent" if workers == 1 else f"agent-{i + 1}"
            env = clean_env(
                LIVEKIT_URL=urls[i % nodes], LIVEKIT_API_KEY=key, LIVEKIT_API_SECRET=secret,
                LIVEKIT_AGENT_NAME=agent_name, OMNI_BASE_URL=f"http://127.0.0.1:{oport}/v1",
                OMNI_MODEL="qwen3-omni-dev", TTS_DEEP_STREAM_MODEL_DIR=str(model_dir),
                TTS_DEEP_STREAM_DEVICE=device,
                **({"CUDA_VISIBLE_DEVICES": gpus[i]} if gpus[i] else {}),
                STREAMTALK_OUTPUT=str(agent_output), AGENT_HTTP_PORT=str(free_port()),
                AGENT_METRICS_PORT=str(free_port()), AGENT_WORKER_NAME=name,
                AGENT_TORCH_THREADS="1", AGENT_EMPTY_ROOM_GRACE_S="3", OMP_NUM_THREADS="1",
                **(agent_env or {}))
            agent = Service(name, [sys.executable, "-m", "agent", "start", "--log-level", "INFO"],
                            env, log_dir / f"{name}.log")
            services.append(agent)
            agents.append(agent)
        for agent in agents:  # loading side by side
            agent.wait_until(lambda a=agent: "registered worker" in a.tail(400), 180,
                             "registration")
        return Stack(urls[0], key, secret, agent_name, agent_output, services, urls)
    except BaseException:
        for s in reversed(services):
            s.stop()
        raise
