"""What every test folder shares: the tiny checkpoint, and a quiet machine for the tests
marked `quiet_machine`.

The folders:
- unit/: fast, CPU only, in this process (a test may run one of our own CLIs in a child
  Python); no service, no checkpoint, no parity venv; the agent's seams (the TTS engine,
  the Omni client, the LiveKit room) are the fakes in support/.
- integration/: the real things on loopback: the tiny checkpoint's engine, the LiveKit
  server, the token server, the dev Omni backend, the agent worker, the official
  implementation in the parity venv; their fixtures are in integration/conftest.py. Also
  what needs a process of its own for seconds: the Triton interpreter over the
  batch-invariant kernels, malloc's arenas across threads.
- gpu/: CUDA only (skipped elsewhere); scripts/gpu_bench.sh runs them with the GPU host's
  own packages, so they and this file import nothing of the voice stack (no livekit).
- support/: what the tests import (`from support.infra import ...`) or run.

The AutoRTC gates compare latencies with a golden baseline recorded on a quiet 2-core
machine. Later in a run the session-scoped services of other tests (a LiveKit server,
a dev Omni server, an agent worker with its engine) are still alive and share those
cores, which shifted the speech-to-text time of a turn by up to ~0.5 s; right after a
fresh install the kernel is still writing gigabytes of venv to disk. So the gated tests
run first, after the disk is flushed and the CPUs have gone idle.
"""

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from streamtalk_common.paths import cache_root
from tts_engine.checkpoint import ensure_checkpoint
from tts_engine.codec_checkpoint import build_random_codec_decoder
from tts_engine.model.codec_decoder import CodecDecoder

QUIET_IDLE_SHARE = 0.8  # of the CPUs' time over one second
QUIET_WAIT_LIMIT_S = 90.0


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers",
                            "quiet_machine: measures latency; runs first, on an idle machine")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: item.get_closest_marker("quiet_machine") is None)  # stable


def _idle_share(window_s: float = 1.0) -> float:
    """The share of CPU time spent idle (not in I/O wait) over `window_s`."""

    def counters() -> list[int]:
        with open("/proc/stat") as f:
            return [int(v) for v in f.readline().split()[1:]]

    before = counters()
    time.sleep(window_s)
    delta = [b - a for a, b in zip(before, counters(), strict=True)]
    return delta[3] / max(1, sum(delta))


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("quiet_machine") is None or not os.path.exists("/proc/stat"):
        return
    os.sync()
    deadline = time.monotonic() + QUIET_WAIT_LIMIT_S
    while (idle := _idle_share()) < QUIET_IDLE_SHARE and time.monotonic() < deadline:
        pass
    if idle < QUIET_IDLE_SHARE:
        print(f"\n[quiet_machine] CPUs only {idle:.0%} idle after {QUIET_WAIT_LIMIT_S:.0f} s; "
              "running anyway")


@pytest.fixture(scope="module")
def single_torch_thread() -> Iterator[None]:
    """Torch on one thread for a module (`pytest.mark.usefixtures`): the tiny models' ops are
    small, and one thread is faster than two fighting over a shared 2-core machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_codec() -> CodecDecoder:
    """The tiny random codec decoder, built in memory."""
    return build_random_codec_decoder("tiny", seed=0)


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    """The tiny random checkpoint in the cache root (rewritten when its writer changes)."""
    return ensure_checkpoint(cache_root() / "checkpoints" / "tiny-test", "tiny", seed=0)
