"""The real services on free loopback ports, for the integration tests; the fixtures built
on them are in tests/integration/conftest.py.

- `start_livekit_server(..., redis=, keys=)`: the LiveKit server binary with fresh keys (from
  a key file); `start_redis`: a Redis that LiveKit nodes share (with their keys), so they
  share rooms and agent workers.
- `start_token_server_process`: `python -m token_server` against a LiveKit server.
- `start_omni_dev_process`: `python -m tools.omni_dev` (faster-whisper + scripted replies).
- `make_speech_wav_file`: a deterministic espeak-ng WAV.
- `BrowserEnv`: system chromium + node modules for playwright-core.

A missing prerequisite (binary not built, chromium not installed) skips the test
with the command that installs it (`require`); under CI (env CI=true) or with
STREAMTALK_REQUIRE_INFRA=1 it fails instead, so CI never passes by skipping.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import pytest

from streamtalk_common.audio import read_wav, write_wav
from streamtalk_common.livekit_keys import write_key_file
from streamtalk_common.net import free_port
from streamtalk_common.paths import REPO_ROOT, cache_root, output_root

CACHE_ROOT = cache_root()
OUTPUT_ROOT = output_root()
LOG_DIR = OUTPUT_ROOT / "test-logs"
LIVEKIT_BIN = Path(os.environ.get("LIVEKIT_SERVER_BIN") or CACHE_ROOT / "bin" / "server")
LIVEKIT_CONFIG = REPO_ROOT / "scripts" / "livekit-dev.yaml"
NODE_MODULES = CACHE_ROOT / "node" / "node_modules"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0

# Variables of a user's own deployment that must not leak into test services.
_SCRUBBED_ENV_PREFIXES = ("LIVEKIT_", "TOKEN_", "OMNI_", "VLLM_", "STREAMTALK_TTS_SERVER",
                          "NODE_IP", "UDP_PORT", "REDIS_", "AGENT_WORKERS")


def require(condition: bool, message: str) -> None:
    """Skip when a prerequisite is missing; fail instead under CI."""
    if condition:
        return
    if (
        os.environ.get("CI", "").lower() in ("1", "true")
        or os.environ.get("STREAMTALK_REQUIRE_INFRA") == "1"
    ):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def service_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUBBED_ENV_PREFIXES)}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


class ServiceProcess:
    """A child process in its own process group, logging to a file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(log_path, "wb")  # closed in stop()
        self.proc = subprocess.Popen(
            argv,
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def log_tail(self, n: int = 40) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])

    def wait_http(self, url: str, timeout_s: float = START_TIMEOUT_S) -> None:
        """Poll `url` until it answers 200; fail fast if the process dies."""
        deadline = time.monotonic() + timeout_s
        last_error = "no answer"
        while time.monotonic() < deadline:
            code = self.proc.poll()
            if code is not None:
                raise RuntimeError(
                    f"{self.name} exited with {code} during start-up; log {self.log_path}:\n"
                    + self.log_tail()
                )
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:
                    if resp.status == 200:
                        return
                    last_error = f"HTTP {resp.status}"
            except (urllib.error.URLError, OSError) as exc:
                last_error = str(exc)
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(
            f"{self.name} not ready at {url} after {timeout_s:.0f}s ({last_error}); "
            f"log {self.log_path}:\n{self.log_tail()}"
        )

    def killed_and_restarted(self, url: str) -> ServiceProcess:
        """SIGKILL the process group, then the same command again (a crash and a
        supervisor's restart); returns the new process once `url` answers."""
        self._signal(signal.SIGKILL)
        self.proc.wait(timeout=STOP_TIMEOUT_S)
        self._log.close()
        restarted = ServiceProcess(self.name, self.argv, self.env,
                                   self.log_path.with_name(f"{self.log_path.stem}-restarted.log"))
        restarted.wait_http(url)
        return restarted

    def _signal(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM the process group, again after 2 s (LiveKit then stops draining
        participants), SIGKILL what is left after `timeout_s`."""
        if self.proc.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=timeout_s)
        self._log.close()


# --------------------------------------------------------------------------- LiveKit


@dataclass
class LiveKitServer:
    url: str  # ws://127.0.0.1:PORT, for clients
    http_url: str  # http://127.0.0.1:PORT, for the server API
    api_key: str
    api_secret: str = field(repr=False)
    port: int
    udp_port: int
    process: ServiceProcess

    def node_id(self) -> str:
        """The node's id (`ND_...`), as Redis's `room_node_map` names the node a room lives on."""
        found = re.search(r'"nodeID": "(ND_[A-Za-z0-9]+)"',
                          self.process.log_path.read_text(errors="replace"))
        assert found, f"no node id in {self.process.log_path}"
        return found.group(1)

    def token(
        self,
        identity: str,
        room: str,
        *,
        kind: str | None = None,
        ttl: timedelta = timedelta(minutes=10),
        name: str | None = None,
        **grants: object,
    ) -> str:
        """A join token for test bots, signed with this server's keys."""
        from livekit import api

        at = (
            api.AccessToken(self.api_key, self.api_secret)
            .with_identity(identity)
            .with_name(name or identity)
            .with_ttl(ttl)
            .with_grants(api.VideoGrants(room_join=True, room=room,
                                         **grants))  # type: ignore[arg-type]
        )
        if kind is not None:
            at = at.with_kind(kind)  # type: ignore[arg-type]
        return at.to_jwt()


@dataclass
class RedisServer:
    port: int
    password: str = field(repr=False)
    process: ServiceProcess

    def cli(self, *args: str) -> str:
        """A redis-cli command's answer (the password through the environment)."""
        return subprocess.run(
            ["redis-cli", "-p", str(self.port), *args], capture_output=True, text=True, timeout=10,
            env={**os.environ, "REDISCLI_AUTH": self.password}).stdout.strip()


def start_redis(conf_dir: Path) -> RedisServer:
    """redis-server on a free loopback port, nothing on disk, a password from a mode-600 file
    (as scripts/redis_server.sh runs it)."""
    require(shutil.which("redis-server") is not None and shutil.which("redis-cli") is not None,
            "redis-server missing: run scripts/install_system_deps.sh")
    port = free_port()
    password = secrets.token_hex(32)
    conf = conf_dir / f"redis-{port}.conf"
    conf.touch(mode=0o600)
    conf.write_text(f"requirepass {password}\n")
    argv = ["redis-server", str(conf), "--bind", "127.0.0.1", "--port", str(port), "--save", "",
            "--appendonly", "no", "--dir", str(conf_dir)]
    redis = RedisServer(port, password,
                        ServiceProcess("redis", argv, service_env(), LOG_DIR / f"redis-{port}.log"))
    deadline = time.monotonic() + START_TIMEOUT_S
    while redis.cli("ping") != "PONG":
        if redis.process.proc.poll() is not None or time.monotonic() > deadline:
            redis.process.stop()
            raise RuntimeError(f"redis-server did not answer; log {redis.process.log_path}:\n"
                               + redis.process.log_tail())
        time.sleep(0.1)
    return redis


def start_livekit_server(key_dir: Path, log_name: str = "livekit-server", *,
                         node_ip: str = "127.0.0.1", config: Path = LIVEKIT_CONFIG,
                         redis: RedisServer | None = None,
                         keys: tuple[str, str] | None = None) -> LiveKitServer:
    """The server on free ports; its keys (fresh, or `keys` to share them with other nodes)
    reach it through a key file in `key_dir`. Its media socket binds 127.0.0.1
    (scripts/livekit-dev.yaml); `node_ip` is the address its ICE candidates advertise
    (another one puts a relay listening there in the path). With `redis` it is one node of
    several that share rooms and agent workers through that Redis."""
    require(
        LIVEKIT_BIN.is_file() and os.access(LIVEKIT_BIN, os.X_OK),
        f"LiveKit server binary missing at {LIVEKIT_BIN}: run scripts/install_livekit_server.sh",
    )
    port = free_port()
    udp_port = free_port(socket.SOCK_DGRAM)
    api_key, api_secret = keys or ("test" + secrets.token_hex(4), secrets.token_urlsafe(32))
    key_file = write_key_file(key_dir / f"livekit-keys-{port}.yaml", api_key, api_secret)
    argv = [
        str(LIVEKIT_BIN),
        "--config", str(config),
        "--bind", "127.0.0.1",
        "--node-ip", node_ip,
        "--port", str(port),
        "--udp-port", str(udp_port),
        "--key-file", str(key_file),
    ]  # fmt: skip
    env = service_env()
    if redis is not None:
        argv += ["--redis-host", f"127.0.0.1:{redis.port}"]
        env["REDIS_PASSWORD"] = redis.password
    proc = ServiceProcess(log_name, argv, env, LOG_DIR / f"{log_name}-{port}.log")
    proc.wait_http(f"http://127.0.0.1:{port}/")
    return LiveKitServer(
        url=f"ws://127.0.0.1:{port}",
        http_url=f"http://127.0.0.1:{port}",
        api_key=api_key,
        api_secret=api_secret,
        port=port,
        udp_port=udp_port,
        process=proc,
    )


# --------------------------------------------------------------------------- token server


@dataclass
class TokenServer:
    base_url: str  # http://127.0.0.1:PORT
    port: int
    env: dict[str, str]
    process: ServiceProcess


def start_token_server_process(livekit: LiveKitServer, **env_extra: str) -> TokenServer:
    port = free_port()
    settings = {
        "LIVEKIT_URL": livekit.url,
        "LIVEKIT_API_KEY": livekit.api_key,
        "LIVEKIT_API_SECRET": livekit.api_secret,
        "STREAMTALK_HOME": str(CACHE_ROOT),
        **env_extra,
    }
    env = service_env(**settings)
    argv = [sys.executable, "-m", "token_server", "--host", "127.0.0.1", "--port", str(port)]
    proc = ServiceProcess("token-server", argv, env, LOG_DIR / f"token-server-{port}.log")
    proc.wait_http(f"http://127.0.0.1:{port}/healthz")
    return TokenServer(base_url=f"http://127.0.0.1:{port}", port=port, env=env, process=proc)


# --------------------------------------------------------------------------- Omni dev backend


@dataclass
class OmniDevServer:
    base_url: str  # http://127.0.0.1:PORT/v1
    model: str
    port: int
    process: ServiceProcess


def start_omni_dev_process(**env_extra: str) -> OmniDevServer:
    port = free_port()
    model = env_extra.pop("OMNI_DEV_MODEL", "qwen3-omni-dev")
    env = service_env(OMNI_DEV_MODEL=model, **env_extra)
    argv = [sys.executable, "-m", "tools.omni_dev", "--host", "127.0.0.1", "--port", str(port)]
    proc = ServiceProcess("omni-dev", argv, env, LOG_DIR / f"omni-dev-{port}.log")
    proc.wait_http(f"http://127.0.0.1:{port}/health", timeout_s=120)
    return OmniDevServer(
        base_url=f"http://127.0.0.1:{port}/v1", model=model, port=port, process=proc
    )


# --------------------------------------------------------------------------- speech and browser


def make_speech_wav_file(
    text: str,
    out: Path,
    *,
    voice: str = "en-us",
    words_per_minute: int = 150,
    lead_silence_s: float = 0.0,
    tail_silence_s: float = 0.0,
    sample_rate: int = 48000,
) -> Path:
    """espeak-ng speech as 16-bit mono WAV at `sample_rate`, padded with silence."""
    import numpy as np

    require(
        shutil.which("espeak-ng") is not None,
        "espeak-ng missing: run scripts/install_system_deps.sh",
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    raw = out.with_suffix(".espeak.wav")
    subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(words_per_minute), "-w", str(raw), text],
        check=True,
        timeout=60,
        capture_output=True,
    )
    pcm, sr = read_wav(raw)
    raw.unlink()
    if sr != sample_rate:
        # linear interpolation is enough for test speech
        n_out = int(round(len(pcm) * sample_rate / sr))
        x = np.linspace(0, len(pcm) - 1, n_out)
        pcm = np.interp(x, np.arange(len(pcm)), pcm.astype(np.float64)).astype(np.int16)
    lead = np.zeros(int(lead_silence_s * sample_rate), dtype=np.int16)
    tail = np.zeros(int(tail_silence_s * sample_rate), dtype=np.int16)
    pcm = np.concatenate([lead, pcm, tail])
    write_wav(out, pcm, sample_rate)
    return out


@dataclass(frozen=True)
class BrowserEnv:
    chromium: Path
    node: Path
    node_modules: Path
