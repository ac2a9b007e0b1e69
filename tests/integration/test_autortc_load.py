"""The AutoRTC load tier, CI-sized: `scripts/run_autortc.sh --tier load` on two LiveKit nodes
(one Redis) and two workers, run for K = 1 and 2 with one conversation per K and every K
run (`--keep-going`). Whether the gates pass on a shared 2-core machine is not asserted
here (the mini tier test gates the latency); what is: every conversation was answered and
heard, each is counted for the worker the probe saw serve it, and the table, load.json and
the picture of P95 against concurrent rooms were written."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support.infra import LIVEKIT_BIN, require

from streamtalk_common.paths import REPO_ROOT

pytestmark = pytest.mark.timeout(300)


def test_the_load_tier_reports_latency_rooms_per_worker_and_a_picture(tmp_path: Path) -> None:
    require(LIVEKIT_BIN.is_file(),
            f"LiveKit server missing at {LIVEKIT_BIN}: run scripts/install_livekit_server.sh")
    for tool in ("redis-server", "espeak-ng"):
        require(shutil.which(tool) is not None,
                f"{tool} missing: run scripts/install_system_deps.sh")
    out = tmp_path / "load"
    argv = ["bash", "scripts/run_autortc.sh", "--tier", "load", "--out", str(out), "--",
            "--ks", "1", "2", "--per-k", "1", "--keep-going"]
    env = {**os.environ, "PYTHON": sys.executable, "STREAMTALK_OUTPUT": str(tmp_path / "output")}
    proc = subprocess.run(argv, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=280)
    log = proc.stdout + proc.stderr
    result = json.loads((out / "load.json").read_text())
    assert (result["nodes"], result["workers"]) == (2, 2), result
    assert [k["k"] for k in result["per_k"]] == [1, 2], log[-3000:]
    for k in result["per_k"]:
        assert k["conversations"] == 1 and k["failures"] == 0, (k, log[-3000:])
        assert k["eot_to_first_audio_p95_ms"] > 0
        assert sum(k["rooms_per_worker"].values()) == 1 \
            and set(k["rooms_per_worker"]) <= {"agent-1", "agent-2"}, k
    assert "load tier: 2 node(s), 2 worker(s)" in log and (out / "load.png").stat().st_size > 10_000
    assert proc.returncode == (0 if all(k["verdict"] == "PASS" for k in result["per_k"])
                               else 1), log[-2000:]
