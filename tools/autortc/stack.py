"""Start the real stack for AutoRTC on loopback ports: LiveKit server (or several nodes
sharing a Redis), dev Omni backend, agent worker(s) (tiny checkpoint on CPU). The services
and the process class are those of streamtalk_common/stack.py; each runs in its own process
group and is stopped (SIGTERM, then SIGKILL) by `Stack.stop()`."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
from dataclasses import dataclass, field
from pathlib import Path

from streamtalk_common import stack
from streamtalk_common.gpu_assignment import assign, nvidia_smi_indices, visible_gpus
from streamtalk_common.livekit_keys import write_key_file
from streamtalk_common.net import free_port
from streamtalk_common.paths import cache_root
from streamtalk_common.stack import ServiceProcess


@dataclass
class Stack:
    livekit_url: str
    api_key: str
    api_secret: str = field(repr=False)
    agent_name: str = "streamtalk"
    agent_output: Path = Path("output")
    services: list[ServiceProcess] = field(default_factory=list)
    livekit_urls: list[str] = field(default_factory=list)  # every node (livekit_url is the first)

    def stop(self) -> None:
        for s in reversed(self.services):
            s.stop()

    def agent_log(self) -> str:
        """The first worker's log tail."""
        for s in self.services:
            if s.name.startswith("agent"):
                return s.log_tail(60)
        return ""


def start(service: stack.Service, log_dir: Path, started: list[ServiceProcess]) -> ServiceProcess:
    """`service`, logging to log_dir/<name>.log; listed in `started`, so a failure stops it."""
    process = ServiceProcess(service, log_dir / service.log_name)
    started.append(process)
    return process


def start_stack(log_dir: Path, agent_output: Path, agent_env: dict[str, str] | None = None,
                omni_env: dict[str, str] | None = None, nodes: int = 1, workers: int = 1,
                restart_agents: bool = False) -> Stack:
    """LiveKit server(s) + dev backend + agent worker(s); raises with the log tail on failure.
    With `restart_agents` a worker that exits by itself (recycled) is started again, as
    start_all.sh does (`kept_running`).
    With `nodes` > 1 the nodes share rooms and workers through a Redis; worker i registers
    with node i mod `nodes` as `agent-<i+1>` (one worker: `agent`), all under one agent name
    and writing to one `agent_output`. With AUTORTC_TTS_DEVICE other than cpu, worker i runs
    on the i-th GPU (streamtalk_common/gpu_assignment.py)."""
    from tts_engine.checkpoint import ensure_checkpoint

    services: list[ServiceProcess] = []
    try:
        lk_bin = stack.livekit_bin()
        if not os.access(lk_bin, os.X_OK):
            raise RuntimeError(f"LiveKit server missing at {lk_bin}: "
                               "run scripts/install_livekit_server.sh")
        key, secret = "autortc" + secrets.token_hex(4), secrets.token_urlsafe(32)
        log_dir.mkdir(parents=True, exist_ok=True)
        shared = {}
        if nodes > 1:
            if shutil.which("redis-server") is None:
                raise RuntimeError("redis-server missing (several LiveKit nodes share it): "
                                   "run scripts/install_system_deps.sh")
            redis_port = free_port()
            conf = log_dir / f"redis-{redis_port}.conf"
            password = stack.write_redis_conf(conf)
            start(stack.redis(redis_port, conf, log_dir), log_dir, services).wait_healthy(30)
            shared = {"redis_port": redis_port, "redis_password": password}
        urls = []
        for n in range(1, nodes + 1):
            port, udp = free_port(), free_port(socket.SOCK_DGRAM)
            key_file = write_key_file(log_dir / f"livekit-keys-{port}.yaml", key, secret)
            name = "livekit" if nodes == 1 else f"livekit-{n}"
            node = stack.livekit_node(name, port=port, udp_port=udp, key_file=key_file, **shared)
            start(node, log_dir, services).wait_healthy()
            urls.append(f"ws://127.0.0.1:{port}")
        oport = free_port()
        omni = stack.omni_dev(oport, **{"OMNI_DEV_MODEL": "qwen3-omni-dev", **(omni_env or {})})
        start(omni, log_dir, services).wait_healthy(120)
        model_dir = ensure_checkpoint(cache_root() / "checkpoints" / "tiny-test", "tiny", seed=0)
        agent_name = "streamtalk-autortc-" + secrets.token_hex(3)
        device = os.environ.get("AUTORTC_TTS_DEVICE", "cpu")
        # on GPUs each worker gets its own, as scripts/agent_worker.sh gives them
        gpus = assign(workers, [] if device == "cpu" else
                      visible_gpus(os.environ.get("CUDA_VISIBLE_DEVICES"), nvidia_smi_indices()))
        agents = []
        settings = {
            "LIVEKIT_API_KEY": key, "LIVEKIT_API_SECRET": secret, "LIVEKIT_AGENT_NAME": agent_name,
            "OMNI_BASE_URL": f"http://127.0.0.1:{oport}/v1", "OMNI_MODEL": "qwen3-omni-dev",
            "TTS_DEEP_STREAM_MODEL_DIR": str(model_dir), "TTS_DEEP_STREAM_DEVICE": device,
            "STREAMTALK_OUTPUT": str(agent_output), "AGENT_TORCH_THREADS": "1",
            "AGENT_EMPTY_ROOM_GRACE_S": "3", "OMP_NUM_THREADS": "1", **(agent_env or {}),
        }
        for i in range(workers):
            worker = stack.agent_worker(
                "agent" if workers == 1 else f"agent-{i + 1}", http_port=free_port(),
                metrics_port=free_port(), livekit_url=urls[i % nodes], gpu=gpus[i],
                log_level="INFO", **settings)
            if restart_agents:
                worker = stack.kept_running(worker)
            agents.append(start(worker, log_dir, services))
        for agent in agents:  # loading side by side
            agent.wait_healthy()
        return Stack(urls[0], key, secret, agent_name, agent_output, services, urls)
    except BaseException:
        for s in reversed(services):
            s.stop()
        raise
