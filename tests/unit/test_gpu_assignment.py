"""One agent worker per GPU (streamtalk_common/gpu_assignment.py): which GPU each worker of
`AGENT_WORKERS=N` gets through CUDA_VISIBLE_DEVICES, on boxes with and without GPUs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from streamtalk_common.gpu_assignment import assign, visible_gpus
from streamtalk_common.paths import REPO_ROOT


def test_each_worker_gets_its_own_gpu_round_robin() -> None:
    assert assign(2, ["0", "1"]) == ["0", "1"]
    assert assign(4, ["0", "1", "2", "3"]) == ["0", "1", "2", "3"]
    assert assign(1, ["0", "1"]) == ["0"]
    assert assign(3, ["0", "1"]) == ["0", "1", "0"]  # more workers than GPUs: they share
    assert assign(3, []) == [None, None, None]  # a CPU box: N CPU workers
    with pytest.raises(ValueError, match="AGENT_WORKERS=0; valid: 1 or more"):
        assign(0, ["0"])


def test_the_visible_gpus_are_those_cuda_visible_devices_allows() -> None:
    listed = ["0", "1", "2", "3"]
    assert visible_gpus(None, listed) == listed  # unset: all that nvidia-smi lists
    assert visible_gpus("2,3", listed) == ["2", "3"]
    # UUIDs kept as given
    assert visible_gpus(" GPU-5e1a , GPU-77b0", listed) == ["GPU-5e1a", "GPU-77b0"]
    assert visible_gpus("", listed) == []  # set but empty: no GPU
    assert visible_gpus(None, []) == []


def run_cli(tmp_path: Path, gpus: int | None, *args: str,
            **env: str) -> subprocess.CompletedProcess[str]:
    """The CLI start_all.sh calls, with an nvidia-smi that lists `gpus` GPUs (None: it finds
    no driver, as on a box without GPUs)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    smi = bin_dir / "nvidia-smi"
    if gpus is None:
        smi.write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed because it could not communicate "
                       "with the NVIDIA driver.'\nexit 9\n")
    else:
        smi.write_text("#!/bin/sh\n[ \"$1\" = --query-gpu=index ] || exit 2\n"
                       + "".join(f"echo {i}\n" for i in range(gpus)))
    smi.chmod(0o755)
    base = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    return subprocess.run([sys.executable, "-m", "streamtalk_common.gpu_assignment", *args],
                          cwd=REPO_ROOT, env={**base, "PATH": f"{bin_dir}:/usr/bin:/bin", **env},
                          capture_output=True, text=True, timeout=30)


def test_the_cli_asks_nvidia_smi_and_says_when_workers_share(tmp_path: Path) -> None:
    two = [run_cli(tmp_path, 2, "2", str(i)) for i in (1, 2)]
    assert [r.stdout for r in two] == ["0\n", "1\n"] and not any(r.stderr for r in two)
    shared = run_cli(tmp_path, 2, "3", "3")
    assert shared.stdout == "0\n" and "3 workers on 2 GPUs (0,1): some share a GPU" in shared.stderr
    allowed = run_cli(tmp_path, 4, "2", "2", CUDA_VISIBLE_DEVICES="2,3")
    assert allowed.stdout == "3\n"


def test_the_cli_on_a_cpu_box_and_with_bad_arguments(tmp_path: Path) -> None:
    cpu = run_cli(tmp_path, None, "2", "2")
    assert cpu.returncode == 0 and cpu.stdout == "\n"
    for args, said in ((("0", "1"), "AGENT_WORKERS=0; valid: 1 or more"),
                       (("2", "3"), "worker index 3; valid: 1..2"),
                       (("two", "1"), "usage:")):
        bad = run_cli(tmp_path, 2, *args)
        assert bad.returncode == 2 and said in bad.stderr, bad.stderr
