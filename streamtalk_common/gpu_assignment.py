"""Which GPU each agent worker gets: one worker per GPU, round-robin.

Each worker loads its own TTS engine, so on a box with several GPUs worker i
runs with `CUDA_VISIBLE_DEVICES` set to the i-th GPU (round-robin when there are
more workers than GPUs: they then share). The GPUs are those the box lets us use:
`CUDA_VISIBLE_DEVICES` when it is set (indices or UUIDs, kept as given; set but
empty means none), else every GPU `nvidia-smi` lists. Without GPUs the workers
run on the CPU and the variable is left alone.

    python -m streamtalk_common.gpu_assignment WORKERS INDEX
        prints worker INDEX's (1-based) CUDA_VISIBLE_DEVICES, or nothing on a CPU box;
        a second line on stderr says when workers share a GPU
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys


def visible_gpus(cuda_visible_devices: str | None, nvidia_smi_indices: list[str]) -> list[str]:
    """The GPUs the workers may use, in order."""
    if cuda_visible_devices is not None:
        return [d.strip() for d in cuda_visible_devices.split(",") if d.strip()]
    return nvidia_smi_indices


def assign(workers: int, gpus: list[str]) -> list[str | None]:
    """Worker i's GPU (None: the CPU), for i in 0..workers-1."""
    if workers < 1:
        raise ValueError(f"AGENT_WORKERS={workers}; valid: 1 or more")
    return [gpus[i % len(gpus)] if gpus else None for i in range(workers)]


def nvidia_smi_indices() -> list[str]:
    """The indices of the GPUs nvidia-smi lists ([] without nvidia-smi or a driver)."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30, check=True).stdout
    except (subprocess.SubprocessError, OSError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip().isdigit()]


def main(argv: list[str]) -> int:
    try:
        workers, index = (int(a) for a in argv)
        gpus = visible_gpus(os.environ.get("CUDA_VISIBLE_DEVICES"), nvidia_smi_indices())
        assigned = assign(workers, gpus)
        if not 1 <= index <= workers:
            raise ValueError(f"worker index {index}; valid: 1..{workers}")
    except ValueError as exc:
        print(f"usage: python -m streamtalk_common.gpu_assignment WORKERS INDEX ({exc})",
              file=sys.stderr)
        return 2
    if gpus and workers > len(gpus):
        print(f"{workers} workers on {len(gpus)} GPUs ({','.join(gpus)}): some share a GPU",
              file=sys.stderr)
    print(assigned[index - 1] or "")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
