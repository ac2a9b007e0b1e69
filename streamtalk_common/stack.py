"""The stack's services, described once, and the one process class that runs them.

Every launcher of the stack starts its services from here:

- the integration tests (tests/support/infra.py) and AutoRTC and the soak
  (tools/autortc/stack.py), on free loopback ports, through `ServiceProcess`;
- scripts/start_all.sh, which runs `python -m streamtalk_common.stack exec SERVICE [INDEX]`:
  it execs the service as described here (`deployed`), on the ports of the deployed
  `Layout`; supervisord runs it too, through scripts/livekit_node.sh, redis_server.sh and
  agent_worker.sh (supervisord.conf names omni_dev's and token_server's argv itself).

What a service is (`Service`): its argv, the settings it adds to the environment, its
health check (an HTTP or redis:// URL that must answer, and for agent workers a log line
too), its log file name, and how long it may take to start and to stop. The builders:
`livekit_node`, `redis`, `omni_dev`, `token_server`, `tts_server`, `agent_worker`.

`Layout` is the deployed stack's repeated services (LIVEKIT_NODES, AGENT_WORKERS), their
names and ports. start_all.sh keeps a shell copy in scripts/stack_layout.sh for its port
and health checks; tests/unit/test_stack.py runs that file and compares the two over
several layouts, so they cannot drift.

    python -m streamtalk_common.stack exec|show SERVICE [INDEX]
        SERVICE: livekit INDEX, agent INDEX, redis, omni_dev, token_server, tts_server
        exec: run the service (the process becomes it: same pid and process group);
        show: print its argv, one argument a line, then the settings it adds (no secrets)

Torch-free: tests, tools and scripts import it.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from streamtalk_common.gpu_assignment import assign, nvidia_smi_indices, visible_gpus
from streamtalk_common.paths import REPO_ROOT, cache_root, output_root
from streamtalk_common.service_procs import SECOND_TERM_S

# A deployment's own settings, which must not leak into services started on free ports.
SCRUBBED_ENV_PREFIXES = ("LIVEKIT_", "TOKEN_", "OMNI_", "VLLM_", "STREAMTALK_TTS_SERVER",
                         "NODE_IP", "UDP_PORT", "REDIS_", "AGENT_WORKERS")
REGISTERED_LINE = "registered worker"  # an agent worker's log, once LiveKit accepted it
NODE_PORT_STEP = 10  # LiveKit node i's ports: the first node's + 10(i-1)
MAX_LIVEKIT_NODES = 8
MAX_AGENT_WORKERS = 64
SECRET_SETTINGS = ("REDIS_PASSWORD", "REDISCLI_AUTH", "LIVEKIT_API_SECRET")


def service_env(**extra: str) -> dict[str, str]:
    """This process's environment without a deployment's settings, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(SCRUBBED_ENV_PREFIXES)}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def redis_cli(port: int, password: str, *args: str) -> str:
    """A redis-cli command's answer (the password through the environment)."""
    return subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True, text=True,
                          timeout=10, env={**os.environ, "REDISCLI_AUTH": password}).stdout.strip()


def livekit_bin(env: Mapping[str, str] = os.environ) -> Path:
    return Path(env.get("LIVEKIT_SERVER_BIN") or cache_root(env) / "bin" / "server")


def livekit_config(env: Mapping[str, str] = os.environ) -> Path:
    return Path(env.get("LIVEKIT_CONFIG_FILE") or REPO_ROOT / "scripts" / "livekit-dev.yaml")


# --------------------------------------------------------------------------- services


@dataclass(frozen=True)
class Service:
    name: str  # livekit, livekit-2, redis, omni-dev, token-server, agent-3...
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict, repr=False)  # added to the environment
    health_url: str = ""  # answers once the service is up (http://, or redis:// with a PONG)
    ready_line: str = ""  # ... and its log holds this line
    start_timeout_s: float = 60.0
    stop_grace_s: float = 10.0  # between SIGTERM and SIGKILL

    @property
    def log_name(self) -> str:
        return f"{self.name}.log"

    def healthy(self, log_text: Callable[[], str]) -> bool:
        if self.ready_line and self.ready_line not in log_text():
            return False
        if self.health_url.startswith("redis://"):
            port = int(self.health_url.rsplit(":", 1)[1])
            return redis_cli(port, self.env["REDISCLI_AUTH"], "ping") == "PONG"
        return not self.health_url or http_ok(self.health_url)


def livekit_node(name: str, *, port: int, udp_port: int, key_file: Path,
                 redis_port: int | None = None, redis_password: str = "",
                 node_ip: str = "127.0.0.1", bind: str = "127.0.0.1",
                 binary: Path | None = None, config: Path | None = None) -> Service:
    """A LiveKit node: signalling on `port`, media on `udp_port`, its keys from `key_file`;
    with `redis_port` one of several nodes that share rooms and workers through it."""
    argv = [str(binary or livekit_bin()), "--config", str(config or livekit_config()),
            "--bind", bind, "--node-ip", node_ip, "--port", str(port), "--udp-port", str(udp_port),
            "--key-file", str(key_file)]
    env = {}
    if redis_port is not None:
        argv += ["--redis-host", f"127.0.0.1:{redis_port}"]
        env["REDIS_PASSWORD"] = redis_password  # LiveKit reads it from its environment
    return Service(name, argv, env, f"http://127.0.0.1:{port}/", start_timeout_s=60)


def write_redis_conf(conf: Path) -> str:
    """Redis's config file with a fresh password (mode 600, so it shows on no command line),
    unless one is there already; returns the password."""
    if not conf.is_file() or not redis_password(conf):
        conf.parent.mkdir(parents=True, exist_ok=True)
        fresh = conf.with_name(conf.name + ".new")
        fresh.unlink(missing_ok=True)
        fd = os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("# Redis of the streamtalk stack (streamtalk_common/stack.py)\n"
                    f"requirepass {secrets.token_hex(32)}\n")
        fresh.replace(conf)
    return redis_password(conf)


def redis_password(conf: Path) -> str:
    try:
        lines = conf.read_text().splitlines()
    except OSError:
        return ""
    return next((ln.split(" ", 1)[1] for ln in lines if ln.startswith("requirepass ")), "")


def redis(port: int, conf: Path, data_dir: Path) -> Service:
    """The Redis that LiveKit nodes share: loopback only, nothing kept on disk (the nodes
    rebuild their routing state), its password in `conf` (write_redis_conf)."""
    argv = ["redis-server", str(conf), "--bind", "127.0.0.1", "--port", str(port),
            "--protected-mode", "yes", "--save", "", "--appendonly", "no", "--dir", str(data_dir),
            "--daemonize", "no"]
    # REDISCLI_AUTH: for the health check's redis-cli; redis-server reads it from conf
    return Service("redis", argv, {"REDISCLI_AUTH": redis_password(conf)},
                   f"redis://127.0.0.1:{port}", start_timeout_s=30)


def omni_dev(port: int, **env: str) -> Service:
    """The dev Omni backend (faster-whisper + scripted replies) at http://127.0.0.1:port/v1."""
    argv = [sys.executable, "-m", "tools.omni_dev", "--host", "127.0.0.1", "--port", str(port)]
    return Service("omni-dev", argv, env, f"http://127.0.0.1:{port}/health", start_timeout_s=180)


def token_server(port: int, host: str = "127.0.0.1", **env: str) -> Service:
    """The token API and web client; it reads LIVEKIT_URL(S) and the keys from `env`."""
    argv = [sys.executable, "-m", "token_server", "--host", host, "--port", str(port)]
    return Service("token-server", argv, env, f"http://{_local(host)}:{port}/healthz",
                   start_timeout_s=60)


def tts_server(port: int, model_dir: Path, host: str = "127.0.0.1", **env: str) -> Service:
    """The standalone TTS HTTP server; ready once its engine is warm."""
    argv = [sys.executable, "-m", "tts_engine", "serve", "--model-dir", str(model_dir),
            "--host", host, "--port", str(port)]
    return Service("tts-server", argv, env, f"http://{_local(host)}:{port}/readyz",
                   start_timeout_s=600, stop_grace_s=20)


def agent_worker(name: str, *, http_port: int, metrics_port: int, livekit_url: str | None = None,
                 gpu: str | None = None, command: str = "start", log_level: str | None = None,
                 **env: str) -> Service:
    """An agent worker named `name` (its agents' streamtalk.worker attribute): health on
    `http_port`, metrics on `metrics_port` (0: off), registered with the LiveKit at
    `livekit_url` (None: the environment's), on `gpu` (None: the environment's CUDA devices)."""
    argv = [sys.executable, "-m", "agent", command]
    if log_level:
        argv += ["--log-level", log_level]
    settings = {"AGENT_WORKER_NAME": name, "AGENT_HTTP_PORT": str(http_port),
                "AGENT_METRICS_PORT": str(metrics_port)}
    if livekit_url is not None:
        settings["LIVEKIT_URL"] = livekit_url
    if gpu is not None:
        settings["CUDA_VISIBLE_DEVICES"] = gpu
    # the SIGKILL comes after the drain: each room finishes its turn, then leaves
    return Service(name, argv, {**settings, **env}, f"http://127.0.0.1:{http_port}/",
                   ready_line=REGISTERED_LINE, start_timeout_s=180, stop_grace_s=20)


def kept_running(service: Service) -> Service:
    """`service` under scripts/keep_running.sh: started again when it exits by itself (a
    recycled agent worker at once), as start_all.sh runs its workers."""
    keeper = ["bash", str(REPO_ROOT / "scripts" / "keep_running.sh"), service.name]
    return replace(service, argv=[*keeper, *service.argv])


def _local(host: str) -> str:  # where a service bound to `host` answers on this machine
    return "127.0.0.1" if host in ("0.0.0.0", "::") else host


# --------------------------------------------------------------------------- the deployed layout


LAYOUT_ENV = {"agent_workers": "AGENT_WORKERS", "livekit_nodes": "LIVEKIT_NODES",
              "livekit_port": "LIVEKIT_PORT", "livekit_udp_port": "LIVEKIT_UDP_PORT",
              "agent_http_port": "AGENT_HTTP_PORT", "agent_metrics_port": "AGENT_METRICS_PORT",
              "redis_port": "REDIS_PORT"}


@dataclass(frozen=True)
class Layout:
    """The repeated services of a deployed stack (scripts/stack_layout.sh in shell):

    AGENT_WORKERS=N: `agent` when N is 1, else agent-1 .. agent-N; worker i answers health on
    AGENT_HTTP_PORT+i-1 and metrics on AGENT_METRICS_PORT+i-1 (0: off), gets the i-th GPU
    and registers with node ((i-1) mod M)+1.
    LIVEKIT_NODES=M: `livekit` when M is 1, else livekit-1 .. livekit-M and `redis`
    (REDIS_PORT) that they share; node i listens on LIVEKIT_PORT+10(i-1) and
    LIVEKIT_UDP_PORT+10(i-1)."""

    agent_workers: int = 1
    livekit_nodes: int = 1
    livekit_port: int = 7880
    livekit_udp_port: int = 7882
    agent_http_port: int = 8081
    agent_metrics_port: int = 8091
    redis_port: int = 6379

    def __post_init__(self) -> None:
        if not 1 <= self.agent_workers <= MAX_AGENT_WORKERS:
            raise ValueError(f"AGENT_WORKERS={self.agent_workers}; "
                             f"valid: 1..{MAX_AGENT_WORKERS} (one per GPU)")
        if not 1 <= self.livekit_nodes <= MAX_LIVEKIT_NODES:
            raise ValueError(f"LIVEKIT_NODES={self.livekit_nodes}; valid: 1..{MAX_LIVEKIT_NODES}")
        http_last = self.agent_http_port + self.agent_workers - 1
        metrics_last = self.agent_metrics_port + self.agent_workers - 1
        if self.agent_metrics_port and not (http_last < self.agent_metrics_port
                                            or metrics_last < self.agent_http_port):
            raise ValueError(
                f"AGENT_WORKERS={self.agent_workers} workers need health ports "
                f"{self.agent_http_port}..{http_last} and metrics ports "
                f"{self.agent_metrics_port}..{metrics_last}, which overlap: "
                "move AGENT_METRICS_PORT")

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Layout:
        values = {}
        for attr, var in LAYOUT_ENV.items():
            if env.get(var):
                if not env[var].isdigit():
                    raise ValueError(f"{var}={env[var]}; valid: a whole number")
                values[attr] = int(env[var])
        return cls(**values)

    def livekit_service(self, i: int) -> str:
        return "livekit" if self.livekit_nodes == 1 else f"livekit-{self._index(i, 'node')}"

    def livekit_ports(self, i: int) -> tuple[int, int]:
        """Node i's signalling (TCP) and media (UDP) ports."""
        step = NODE_PORT_STEP * (self._index(i, "node") - 1)
        return self.livekit_port + step, self.livekit_udp_port + step

    def livekit_url(self, i: int) -> str:
        return f"ws://127.0.0.1:{self.livekit_ports(i)[0]}"

    def agent_service(self, i: int) -> str:
        return "agent" if self.agent_workers == 1 else f"agent-{self._index(i, 'worker')}"

    def agent_ports(self, i: int) -> tuple[int, int]:
        """Worker i's health and metrics ports (metrics 0: off)."""
        i = self._index(i, "worker")
        return (self.agent_http_port + i - 1,
                self.agent_metrics_port and self.agent_metrics_port + i - 1)

    def agent_node(self, i: int) -> int:
        """The LiveKit node worker i registers with."""
        return (self._index(i, "worker") - 1) % self.livekit_nodes + 1

    def services(self) -> list[str]:
        """The repeated services, redis first (several nodes share it)."""
        nodes = [self.livekit_service(i) for i in range(1, self.livekit_nodes + 1)]
        workers = [self.agent_service(i) for i in range(1, self.agent_workers + 1)]
        return (["redis"] if self.livekit_nodes > 1 else []) + nodes + workers

    def _index(self, i: int, what: str) -> int:
        count = self.livekit_nodes if what == "node" else self.agent_workers
        if not 1 <= i <= count:
            raise ValueError(f"{what} index {i}; valid: 1..{count}")
        return i


DEPLOYED = ("livekit", "redis", "agent", "omni_dev", "token_server", "tts_server")
INDEXED = ("livekit", "agent")  # one of several: exec livekit INDEX
RUN_DIR_NAME = "run"  # $STREAMTALK_OUTPUT/run: the deployed stack's pid files, logs, redis.conf
REDIS_WAIT_S = 15  # supervisord starts Redis beside the nodes, start_all.sh before them


def wait_for_deployed_redis(env: Mapping[str, str] = os.environ) -> None:
    """With several LiveKit nodes, wait until the deployed Redis answers with the password of
    its conf (a node started first would exit); raises ValueError after REDIS_WAIT_S."""
    layout = Layout.from_env(env)
    if layout.livekit_nodes == 1:
        return
    conf = output_root(env) / RUN_DIR_NAME / "redis.conf"
    deadline = time.monotonic() + REDIS_WAIT_S
    while not ((password := redis_password(conf))
               and redis_cli(layout.redis_port, password, "ping") == "PONG"):
        if time.monotonic() > deadline:
            raise ValueError(f"Redis does not answer on 127.0.0.1:{layout.redis_port} with the "
                             f"password in {conf} after {REDIS_WAIT_S} s: start it first "
                             "(scripts/redis_server.sh)")
        time.sleep(0.2)


def deployed(kind: str, index: int, env: Mapping[str, str] = os.environ) -> Service:
    """Service `kind` (DEPLOYED) number `index` (livekit and agent) of the stack deployed with
    `env` (start_all.sh, supervisord): on the ports of its Layout, and OMNI_DEV_PORT (8000),
    TOKEN_SERVER_HOST/PORT (127.0.0.1, 3000), TTS_HOST/PORT (127.0.0.1, 9000)."""
    layout = Layout.from_env(env)
    run_dir = output_root(env) / RUN_DIR_NAME
    if kind == "redis":
        return redis(layout.redis_port, run_dir / "redis.conf", run_dir / "redis")
    if kind == "livekit":
        key_file = env.get("LIVEKIT_SERVER_KEY_FILE")
        if not key_file:
            raise ValueError("LIVEKIT_SERVER_KEY_FILE is not set: "
                             "run through scripts/livekit_keys.sh")
        port, udp = layout.livekit_ports(index)
        redis_port, password = None, ""
        if layout.livekit_nodes > 1:
            redis_port, password = layout.redis_port, redis_password(run_dir / "redis.conf")
            if not password:
                raise ValueError(f"no Redis password in {run_dir / 'redis.conf'}: "
                                 "start Redis first (scripts/redis_server.sh)")
        return livekit_node(layout.livekit_service(index), port=port, udp_port=udp,
                            key_file=Path(key_file), redis_port=redis_port, redis_password=password,
                            node_ip=env.get("LIVEKIT_NODE_IP") or "127.0.0.1",
                            bind=env.get("LIVEKIT_BIND") or "127.0.0.1",
                            binary=livekit_bin(env), config=livekit_config(env))
    if kind == "agent":
        http_port, metrics_port = layout.agent_ports(index)
        url = None if layout.livekit_nodes == 1 else layout.livekit_url(layout.agent_node(index))
        gpus = visible_gpus(env.get("CUDA_VISIBLE_DEVICES"), nvidia_smi_indices())
        gpu = assign(layout.agent_workers, gpus)[index - 1]
        return agent_worker(layout.agent_service(index), http_port=http_port,
                            metrics_port=metrics_port, livekit_url=url, gpu=gpu)
    if kind == "omni_dev":
        return omni_dev(int(env.get("OMNI_DEV_PORT") or 8000))
    if kind == "token_server":
        return token_server(int(env.get("TOKEN_SERVER_PORT") or 3000),
                            env.get("TOKEN_SERVER_HOST") or "127.0.0.1")
    if kind == "tts_server":
        model_dir = env.get("TTS_DEEP_STREAM_MODEL_DIR") or cache_root(env) / "checkpoints" / "tiny"
        return tts_server(int(env.get("TTS_PORT") or 9000), Path(model_dir),
                          env.get("TTS_HOST") or "127.0.0.1")
    raise ValueError(f"service {kind!r}; valid: {', '.join(DEPLOYED)}")


# --------------------------------------------------------------------------- processes


class ServiceProcess:
    """A service running as a child in its own process group, logging to `log_path`; its
    environment is `base_env` (default: service_env(), scrubbed) plus the service's settings."""

    def __init__(self, service: Service, log_path: Path,
                 base_env: Mapping[str, str] | None = None) -> None:
        self.service = service
        self.name = service.name
        self.log_path = log_path
        self.base_env = service_env() if base_env is None else dict(base_env)
        self.env = {**self.base_env, **service.env}
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(log_path, "wb")  # closed in stop()
        self.proc = subprocess.Popen(service.argv, cwd=REPO_ROOT, env=self.env,
                                     stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, n: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-n:])

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_until(self, ok: Callable[[], bool], what: str, timeout_s: float | None = None) -> None:
        """Poll `ok` until true; raises with the log tail when the process dies first or after
        `timeout_s` (default: the service's start timeout; then it is stopped)."""
        timeout_s = self.service.start_timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode} before {what}; "
                                   f"log {self.log_path}:\n{self.log_tail(60)}")
            if ok():
                return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"{self.name}: no {what} after {timeout_s:.0f} s; "
                           f"log {self.log_path}:\n{self.log_tail(60)}")

    def wait_healthy(self, timeout_s: float | None = None) -> ServiceProcess:
        service = self.service
        checks = " and ".join(c for c in (service.health_url,
                                          service.ready_line and repr(service.ready_line)) if c)
        self.wait_until(lambda: service.healthy(self.log_text), f"health ({checks})", timeout_s)
        return self

    def _signal(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def stop(self, timeout_s: float | None = None) -> None:
        """SIGTERM the process group, again after 2 s (LiveKit then stops draining
        participants), SIGKILL what is left after `timeout_s` (default: the service's grace)."""
        timeout_s = self.service.stop_grace_s if timeout_s is None else timeout_s
        if self.proc.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=SECOND_TERM_S)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self.proc.wait(timeout=timeout_s)
        self._log.close()

    def killed_and_restarted(self) -> ServiceProcess:
        """SIGKILL the process group, then the same service again (a crash and a supervisor's
        restart), logging beside the first; returns it once healthy."""
        self._signal(signal.SIGKILL)
        self.proc.wait(timeout=self.service.stop_grace_s)
        self._log.close()
        again = self.log_path.with_name(f"{self.log_path.stem}-restarted.log")
        return ServiceProcess(self.service, again, self.base_env).wait_healthy()


# --------------------------------------------------------------------------- command line


def main(argv: list[str]) -> int:
    usage = ("usage: python -m streamtalk_common.stack {exec|show} "
             "{livekit INDEX | agent INDEX | redis | omni_dev | token_server | tts_server}")
    if len(argv) not in (2, 3) or argv[0] not in ("exec", "show"):
        print(usage, file=sys.stderr)
        return 2
    action, kind = argv[0], argv[1]
    try:
        if (kind in INDEXED) != (len(argv) == 3) or (len(argv) == 3 and not argv[2].isdigit()):
            raise ValueError(f"{kind} takes {'an INDEX' if kind in INDEXED else 'no INDEX'}; "
                             f"got {' '.join(argv[1:])!r}")
        index = int(argv[2]) if len(argv) == 3 else 1
        if action == "exec" and kind == "redis":
            if shutil.which("redis-server") is None:
                raise ValueError("redis-server missing (several LiveKit nodes share rooms through "
                                 "it): run scripts/install_system_deps.sh, or apt-get install "
                                 "redis-server")
            run_dir = output_root() / RUN_DIR_NAME
            (run_dir / "redis").mkdir(parents=True, exist_ok=True)
            write_redis_conf(run_dir / "redis.conf")
        if action == "exec" and kind == "livekit":
            Layout.from_env().livekit_ports(index)  # a wrong index says so before any wait
            wait_for_deployed_redis()
        service = deployed(kind, index)
    except ValueError as exc:
        print(f"{usage}: {exc}", file=sys.stderr)
        return 2
    if action == "show":
        print("\n".join(service.argv))
        for k, v in service.env.items():
            print(f"{k}={'(secret)' if k in SECRET_SETTINGS else v}")
        return 0
    if kind == "agent":  # its log says where it runs
        s = {"LIVEKIT_URL": "ws://127.0.0.1:7880", **os.environ, **service.env}
        gpu = service.env.get("CUDA_VISIBLE_DEVICES")
        print(f"[streamtalk {time.strftime('%H:%M:%S')}] {service.name}: LiveKit "
              f"{s['LIVEKIT_URL']}, {f'GPU {gpu}' if gpu else 'no GPU (CPU)'}, "
              f"health :{s['AGENT_HTTP_PORT']}, metrics :{s['AGENT_METRICS_PORT']}",
              file=sys.stderr, flush=True)
    os.chdir(REPO_ROOT)
    os.execvpe(service.argv[0], service.argv, {**os.environ, **service.env})


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
