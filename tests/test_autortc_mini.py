"""AutoRTC mini tier on the real stack (LiveKit server, dev backend, agent worker with the
tiny checkpoint), `ci` gate profile, against the golden baseline in golden/autortc/.

A deliberately broken agent (its backend answers 1.5 s late: OMNI_DEV_FIRST_TOKEN_DELAY_S)
must fail with a readable reason naming the gates it broke.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from infra_fixtures import require

REPO = Path(__file__).resolve().parent.parent
GOLDEN = REPO / "golden" / "autortc" / "summary.json"
CACHE = Path(os.environ.get("STREAMTALK_HOME") or Path.home() / ".cache" / "streamtalk")

pytestmark = pytest.mark.timeout(300)


def _require_stack() -> None:
    missing = []
    if not (CACHE / "bin" / "server").exists() and not os.environ.get("LIVEKIT_SERVER_BIN"):
        missing.append("LiveKit server (scripts/install_livekit_server.sh)")
    if shutil.which("espeak-ng") is None:
        missing.append("espeak-ng (scripts/install_system_deps.sh)")
    if not GOLDEN.exists():
        missing.append(f"golden baseline {GOLDEN.relative_to(REPO)}")
    if missing:
        require(False, "AutoRTC prerequisites missing: " + ", ".join(missing))


def run_suite(out: Path, *extra: str, timeout_s: float = 200) -> tuple[int, dict, str]:
    argv = [sys.executable, "-m", "tools.autortc.run_suite", "--start-stack", "--profile", "ci",
            "--baseline", str(GOLDEN), "--out", str(out), "--wav-cache", str(out.parent / "wavs"),
            "--total-timeout-s", str(timeout_s - 30), *extra]
    env = {**os.environ, "STREAMTALK_OUTPUT": str(out.parent / "output")}
    proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout_s)
    summary = json.loads((out / "summary.json").read_text()) if (out / "summary.json").exists() else {}
    return proc.returncode, summary, proc.stdout + proc.stderr


def test_mini_tier_passes_against_the_golden_baseline(tmp_path: Path) -> None:
    _require_stack()
    rc, summary, log = run_suite(tmp_path / "mini", "--tier", "mini")
    report = (tmp_path / "mini" / "report.md").read_text() if summary else log
    assert rc == 0 and summary.get("verdict") == "PASS", report + "\n" + log[-3000:]
    assert summary["counts"]["capture_status"] == {"OK": 4}, report
    assert summary["primary_kpi"]["baseline"] is not None
    assert summary["primary_kpi"]["delta"] is not None


def test_slow_agent_fails_with_a_readable_reason(tmp_path: Path) -> None:
    _require_stack()
    rc, summary, log = run_suite(tmp_path / "slow", "--tier", "broken",
                                 "--only", "p0_hello_endpoint",
                                 "--omni-env", "OMNI_DEV_FIRST_TOKEN_DELAY_S=1.5")
    assert rc == 1, log[-3000:]
    assert summary["verdict"] == "FAIL"
    failed = {g["gate"] for g in summary["gates"] if g["status"] == "FAIL"}
    assert {"primary_kpi_regression", "fast_lane_ttft_p95"} <= failed, summary["gates"]
    assert summary["primary_kpi"]["delta"] > 1000
    assert "FAIL primary_kpi_regression" in log, log[-3000:]
    report = (tmp_path / "slow" / "report.md").read_text()
    assert "# AutoRTC report: FAIL" in report and "Suggested fixes" in report
