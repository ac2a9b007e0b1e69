"""The real services on free loopback ports, for the integration tests; the fixtures built
on them are in tests/integration/conftest.py.

The services and the process class are those of streamtalk_common/stack.py, on free ports:

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
import socket
import subprocess
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import pytest

from streamtalk_common import stack
from streamtalk_common.audio import read_wav, write_wav
from streamtalk_common.livekit_keys import write_key_file
from streamtalk_common.net import free_port
from streamtalk_common.paths import REPO_ROOT, cache_root, output_root
from streamtalk_common.stack import ServiceProcess, service_env

CACHE_ROOT = cache_root()
OUTPUT_ROOT = output_root()
LOG_DIR = OUTPUT_ROOT / "test-logs"
LIVEKIT_BIN = stack.livekit_bin()
LIVEKIT_CONFIG = stack.livekit_config()
NODE_MODULES = CACHE_ROOT / "node" / "node_modules"

__all__ = ["REPO_ROOT", "ServiceProcess", "free_port", "service_env"]  # re-exported to tests


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


def start_service(service: stack.Service, log_stem: str) -> ServiceProcess:
    """`service`, logging to LOG_DIR/<log_stem>.log, once healthy."""
    return ServiceProcess(service, LOG_DIR / f"{log_stem}.log").wait_healthy()


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
        found = re.search(r'"nodeID": "(ND_[A-Za-z0-9]+)"', self.process.log_text())
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
        return stack.redis_cli(self.port, self.password, *args)


def start_redis(conf_dir: Path) -> RedisServer:
    """The stack's Redis (streamtalk_common/stack.py) on a free loopback port."""
    require(shutil.which("redis-server") is not None and shutil.which("redis-cli") is not None,
            "redis-server missing: run scripts/install_system_deps.sh")
    port = free_port()
    conf = conf_dir / f"redis-{port}.conf"
    password = stack.write_redis_conf(conf)
    process = start_service(stack.redis(port, conf, conf_dir), f"redis-{port}")
    return RedisServer(port, password, process)


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
    shared = {} if redis is None else {"redis_port": redis.port, "redis_password": redis.password}
    service = stack.livekit_node(log_name, port=port, udp_port=udp_port, key_file=key_file,
                                 node_ip=node_ip, config=config, **shared)
    return LiveKitServer(
        url=f"ws://127.0.0.1:{port}",
        http_url=f"http://127.0.0.1:{port}",
        api_key=api_key,
        api_secret=api_secret,
        port=port,
        udp_port=udp_port,
        process=start_service(service, f"{log_name}-{port}"),
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
    settings = {"LIVEKIT_URL": livekit.url, "LIVEKIT_API_KEY": livekit.api_key,
                "LIVEKIT_API_SECRET": livekit.api_secret, "STREAMTALK_HOME": str(CACHE_ROOT)}
    service = stack.token_server(port, **{**settings, **env_extra})
    proc = start_service(service, f"token-server-{port}")
    return TokenServer(base_url=f"http://127.0.0.1:{port}", port=port, env=proc.env, process=proc)


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
    service = stack.omni_dev(port, OMNI_DEV_MODEL=model, **env_extra)
    proc = start_service(service, f"omni-dev-{port}")
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
