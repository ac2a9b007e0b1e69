"""Start the real stack for AutoRTC on loopback ports: LiveKit server, dev Omni backend,
agent worker (tiny checkpoint on CPU). Each service runs in its own process group and
is stopped (SIGTERM, then SIGKILL) by `Stack.stop()`."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from streamtalk_common.livekit_keys import write_key_file

from .common import REPO_ROOT

_SCRUB = ("LIVEKIT_", "TOKEN_", "OMNI_", "NODE_IP", "UDP_PORT")


def cache_root() -> Path:
    return Path(os.environ.get("STREAMTALK_HOME") or Path.home() / ".cache" / "streamtalk")


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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

    def stop(self) -> None:
        for s in reversed(self.services):
            s.stop()

    def agent_log(self) -> str:
        for s in self.services:
            if s.name == "agent":
                return s.tail(60)
        return ""


def start_stack(log_dir: Path, agent_output: Path, agent_env: dict[str, str] | None = None,
                omni_env: dict[str, str] | None = None) -> Stack:
    """LiveKit server + dev backend + agent worker; raises with the log tail on failure."""
    from tts_engine.checkpoint import ensure_checkpoint

    services: list[Service] = []
    try:
        lk_bin = Path(os.environ.get("LIVEKIT_SERVER_BIN") or cache_root() / "bin" / "server")
        if not os.access(lk_bin, os.X_OK):
            raise RuntimeError(f"LiveKit server missing at {lk_bin}: "
                               "run scripts/install_livekit_server.sh")
        port, udp = free_port(), free_port(socket.SOCK_DGRAM)
        key, secret = "autortc" + secrets.token_hex(4), secrets.token_urlsafe(32)
        log_dir.mkdir(parents=True, exist_ok=True)
        key_file = write_key_file(log_dir / f"livekit-keys-{port}.yaml", key, secret)
        lk = Service("livekit", [str(lk_bin), "--config", str(REPO_ROOT / "scripts" / "livekit-dev.yaml"),
                                 "--bind", "127.0.0.1", "--node-ip", "127.0.0.1", "--port", str(port),
                                 "--udp-port", str(udp), "--key-file", str(key_file)],
                     clean_env(), log_dir / "livekit.log")
        services.append(lk)
        lk.wait_until(lambda: http_ok(f"http://127.0.0.1:{port}/"), 60, "HTTP answer")
        oport = free_port()
        omni = Service("omni-dev", [sys.executable, "-m", "tools.omni_dev", "--host", "127.0.0.1",
                                    "--port", str(oport)],
                       clean_env(OMNI_DEV_MODEL="qwen3-omni-dev", **(omni_env or {})),
                       log_dir / "omni-dev.log")
        services.append(omni)
        omni.wait_until(lambda: http_ok(f"http://127.0.0.1:{oport}/health"), 120, "health")
        model_dir = ensure_checkpoint(cache_root() / "checkpoints" / "tiny-test", "tiny", seed=0)
        name = "streamtalk-autortc-" + secrets.token_hex(3)
        env = clean_env(
            LIVEKIT_URL=f"ws://127.0.0.1:{port}", LIVEKIT_API_KEY=key, LIVEKIT_API_SECRET=secret,
            LIVEKIT_AGENT_NAME=name, OMNI_BASE_URL=f"http://127.0.0.1:{oport}/v1",
            OMNI_MODEL="qwen3-omni-dev", TTS_DEEP_STREAM_MODEL_DIR=str(model_dir),
            TTS_DEEP_STREAM_DEVICE=os.environ.get("AUTORTC_TTS_DEVICE", "cpu"),
            STREAMTALK_OUTPUT=str(agent_output), AGENT_HTTP_PORT=str(free_port()),
            AGENT_METRICS_PORT=str(free_port()),
            AGENT_TORCH_THREADS="1", AGENT_EMPTY_ROOM_GRACE_S="3", OMP_NUM_THREADS="1",
            **(agent_env or {}))
        agent = Service("agent", [sys.executable, "-m", "agent", "start", "--log-level", "INFO"],
                        env, log_dir / "agent.log")
        services.append(agent)
        agent.wait_until(lambda: "registered worker" in agent.tail(400), 180, "registration")
        return Stack(f"ws://127.0.0.1:{port}", key, secret, name, agent_output, services)
    except BaseException:
        for s in reversed(services):
            s.stop()
        raise
