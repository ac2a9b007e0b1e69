"""Fixtures of the integration tests: the real services on free loopback ports (support/).

- `livekit_server` (session): the LiveKit server binary with fresh keys (from a key file).
- `token_server` (session): `python -m token_server` against that LiveKit server;
  `start_token_server` (factory): another one with extra env (access key...).
- `omni_dev_server` (session): `python -m tools.omni_dev` (faster-whisper + scripted replies).
- `tts_server` (module): `python -m tts_engine serve` on the tiny checkpoint.
- `agent_worker` (session): `python -m agent start` against the session's LiveKit server and
  dev Omni backend, with the tiny checkpoint on CPU; its traces and pre_rtc files go to
  `agent_output_dir`. `start_agent_worker` (factory): another worker with extra env (a
  backend that is down...), stopped after the test.
- `parity_python` (session): the python of the venv that runs the official qwen-tts.
- `make_speech_wav` (factory): a deterministic espeak-ng WAV.
- `browser_env` (session): system chromium + node modules for playwright-core.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support.agent_worker import AgentWorker, start_agent_worker_process
from support.infra import (
    NODE_MODULES,
    BrowserEnv,
    LiveKitServer,
    OmniDevServer,
    TokenServer,
    make_speech_wav_file,
    require,
    start_livekit_server,
    start_omni_dev_process,
    start_token_server_process,
)
from support.tts_server import TTSServer

from tools.talker_parity import default_parity_python

# ------------------------------------------------------------ LiveKit and the token server


@pytest.fixture(scope="session")
def livekit_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveKitServer]:
    server = start_livekit_server(tmp_path_factory.mktemp("livekit"))
    try:
        yield server
    finally:
        server.process.stop()


@pytest.fixture(scope="session")
def token_server(livekit_server: LiveKitServer) -> Iterator[TokenServer]:
    server = start_token_server_process(livekit_server)
    try:
        yield server
    finally:
        server.process.stop()


@pytest.fixture
def start_token_server(livekit_server: LiveKitServer) -> Iterator[Callable[..., TokenServer]]:
    """Factory: `start_token_server(TOKEN_ACCESS_KEY="k")`; stopped after the test."""
    started: list[TokenServer] = []

    def start(**env_extra: str) -> TokenServer:
        server = start_token_server_process(livekit_server, **env_extra)
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in started:
            server.process.stop()


# ------------------------------------------------------------ Omni dev backend and TTS server


@pytest.fixture(scope="session")
def omni_dev_server() -> Iterator[OmniDevServer]:
    # Fast replies keep tests short; the timing knobs get their own test.
    server = start_omni_dev_process(
        OMNI_DEV_FIRST_TOKEN_DELAY_S="0.05", OMNI_DEV_TOKENS_PER_S="200"
    )
    try:
        yield server
    finally:
        server.process.stop()


@pytest.fixture(scope="module")
def tts_server(tiny_model_dir: Path,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[TTSServer]:
    # invariant: concurrent streams equal solo runs byte for byte;
    # rows: no real-time refusals on a CPU
    env = {"TTS_BATCH_INVARIANT": "1", "TTS_ADMISSION": "rows"}
    server = TTSServer(tiny_model_dir, tmp_path_factory.mktemp("tts") / "server.log", env)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


# ------------------------------------------------------------ agent worker


@pytest.fixture(scope="session")
def agent_output_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("agent-output")


@pytest.fixture(scope="session")
def agent_worker(
    livekit_server: LiveKitServer,
    omni_dev_server: OmniDevServer,
    tiny_model_dir: Path,
    agent_output_dir: Path,
) -> Iterator[AgentWorker]:
    worker = start_agent_worker_process(
        livekit_server, omni_dev_server.base_url, omni_dev_server.model, tiny_model_dir,
        agent_output_dir,
    )
    try:
        yield worker
    finally:
        worker.process.stop(timeout_s=20)


@pytest.fixture
def start_agent_worker(
    livekit_server: LiveKitServer, tiny_model_dir: Path, tmp_path: Path
) -> Iterator[Callable[..., AgentWorker]]:
    """Factory: `start_agent_worker(omni_base_url, omni_model="m", **env)`;
    stopped after the test."""
    started: list[AgentWorker] = []

    def start(omni_base_url: str, omni_model: str = "qwen3-omni-dev", **env: str) -> AgentWorker:
        worker = start_agent_worker_process(livekit_server, omni_base_url, omni_model,
                                            tiny_model_dir, tmp_path / f"out-{len(started)}", **env)
        started.append(worker)
        return worker

    try:
        yield start
    finally:
        for w in started:
            w.process.stop(timeout_s=20)


# ------------------------------------------------------------ the official implementation


@pytest.fixture(scope="session")
def parity_python() -> Path:
    """The python of the venv that runs the official implementation."""
    python = default_parity_python()
    if not python.exists():
        pytest.fail(f"{python} is missing: run scripts/setup_parity_venv.sh "
                    "(scripts/test.sh does it)")
    return python


# ------------------------------------------------------------ speech and browser


@pytest.fixture
def make_speech_wav(tmp_path: Path) -> Callable[..., Path]:
    """Factory: `make_speech_wav("hello", tail_silence_s=2.0, sample_rate=16000)` -> Path."""
    counter = iter(range(1_000_000))

    def make(text: str, **kwargs: object) -> Path:
        return make_speech_wav_file(text, tmp_path / f"speech-{next(counter)}.wav",
                                    **kwargs)  # type: ignore[arg-type]

    return make


@pytest.fixture(scope="session")
def browser_env() -> BrowserEnv:
    chromium = (
        os.environ.get("CHROMIUM_BIN")
        or shutil.which("chromium")
        or shutil.which("chromium-browser")
    )
    require(chromium is not None, "chromium missing: run scripts/install_system_deps.sh")
    node = shutil.which("node")
    require(node is not None, "node missing: run scripts/install_system_deps.sh")
    require(
        (NODE_MODULES / "playwright-core" / "package.json").is_file()
        and (NODE_MODULES / "livekit-client" / "dist" / "livekit-client.umd.js").is_file(),
        f"playwright-core/livekit-client missing in {NODE_MODULES}: run "
        "scripts/install_node_deps.sh",
    )
    return BrowserEnv(chromium=Path(chromium), node=Path(node),  # type: ignore[arg-type]
                      node_modules=NODE_MODULES)
