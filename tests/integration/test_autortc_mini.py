"""AutoRTC mini tier on the real stack (LiveKit server, dev backend, agent worker with the
tiny checkpoint), run the way users run it: `scripts/run_autortc.sh --tier mini`, with the
`ci` gate profile against the golden baseline in golden/autortc/.

The gates that follow the machine's speed (MACHINE_BOUND_GATES) are measured and reported
here, not asserted: on the CI kind of machine (2 shared cores, the whole stack and the CPU
TTS on them) the same code's run P95 went from 1606 to 2074 ms and its dropouts from 0 to 8
within half an hour, as the dev backend's same recognitions took 579 then 884 ms on average
per run (docs/AUTORTC.md, "What a shared 2-core machine can judge").
`scripts/run_autortc.sh --tier mini` still fails on them, for a run on a calibrated
machine; the slow-backend test below checks that a real regression fails the PRIMARY_KPI.
Every other gate must pass here.

The mini tier holds two turn-taking cases (a mid-sentence pause, a backchannel during the
reply). An agent that ends the turn on VAD silence alone answers into the pause and stops
for the backchannel, so it fails premature_replies and false_stops here: that is a
measured defect of such an agent, not noise, and is not repeated away.

Deliberately broken agents must fail with a readable reason: one whose TTS output is muted
(AGENT_DEBUG_MUTE_TTS=1: the room hears silence while pre_rtc.wav keeps the real audio),
and one whose backend answers 1.5 s late (OMNI_DEV_FIRST_TOKEN_DELAY_S).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from support.infra import require

from streamtalk_common.paths import REPO_ROOT, cache_root

GOLDEN = REPO_ROOT / "golden" / "autortc" / "summary.json"
CACHE = cache_root()

pytestmark = [pytest.mark.timeout(480), pytest.mark.quiet_machine]


def _require_stack() -> None:
    missing = []
    if not (CACHE / "bin" / "server").exists() and not os.environ.get("LIVEKIT_SERVER_BIN"):
        missing.append("LiveKit server (scripts/install_livekit_server.sh)")
    if shutil.which("espeak-ng") is None:
        missing.append("espeak-ng (scripts/install_system_deps.sh)")
    require(not missing, "AutoRTC prerequisites missing: " + ", ".join(missing))


def run_tier(out: Path, *extra: str) -> tuple[int, dict, str]:
    """scripts/run_autortc.sh --tier mini [-- extra run_suite args]; rc, summary, log."""
    argv = ["bash", "scripts/run_autortc.sh", "--tier", "mini", "--out", str(out)]
    if extra:
        argv += ["--", *extra]
    env = {**os.environ, "PYTHON": sys.executable, "STREAMTALK_OUTPUT": str(out.parent / "output")}
    proc = subprocess.run(argv, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=460)
    summary_path = out / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    return proc.returncode, summary, proc.stdout + proc.stderr


# the gates that the calibration sets on that machine failed or came within one sigma of
# (docs/AUTORTC.md); the other timing gates kept wide margins there (tts -> publish P95
# <= 8.6 ms of 120, inter-arrival P95 <= 12.6 ms of 30, max gap <= 100 ms of 350, barge-in
# stop P50 <= 348 ms of 460)
MACHINE_BOUND_GATES = {"eot_to_first_audio_p95", "primary_kpi_regression", "audible_dropout",
                       "fast_lane_ttft_p95", "resume_gap_p95"}
MINI_CASES = 6  # 4 classic + the mid-sentence pause and the backchannel (docs/AUTORTC.md)


def test_mini_tier_meets_every_gate_a_shared_machine_can_judge(tmp_path: Path) -> None:
    _require_stack()
    out = tmp_path / "mini"
    rc, summary, log = run_tier(out)
    report = (out / "report.md").read_text() if summary else ""
    failed = [g for g in summary.get("gates", []) if g["status"] == "FAIL"]
    assert summary and {g["gate"] for g in failed} <= MACHINE_BOUND_GATES, \
        report + "\n" + log[-3000:]
    # the script's exit code still tells a calibrated machine's verdict
    assert (rc, summary["verdict"]) == ((1, "FAIL") if failed else (0, "PASS")), log[-3000:]
    if failed:  # in pytest's warnings summary, with the values
        values = "; ".join(f"{g['gate']} {g['value']} (needs {g['threshold']})" for g in failed)
        warnings.warn(f"AutoRTC mini, reported, not asserted: {values}", stacklevel=1)
    assert summary["counts"]["capture_status"] == {"OK": MINI_CASES}, report
    assert summary["counts"]["reply_wavs"] == MINI_CASES
    assert summary["counts"]["pre_rtc_wavs"] == MINI_CASES
    kpi = summary["primary_kpi"]
    assert kpi["baseline"] == json.loads(GOLDEN.read_text())["primary_kpi"]["value"]
    assert kpi["delta"] == pytest.approx(kpi["value"] - kpi["baseline"], abs=0.02)
    # 9 gates for every run + 5 turn-taking gates, all with data from the mini cases
    assert len(summary["gates"]) == 14 and "SKIP" not in {g["status"] for g in summary["gates"]}
    # the pictures exist and report.md links them
    assert "latency.png" in summary["pngs"] and len(summary["pngs"]) == MINI_CASES + 1, \
        summary["pngs"]
    for png in summary["pngs"]:
        assert (out / png).read_bytes()[:4] == b"\x89PNG", png
        assert f"]({png})" in report
    for row in summary["rows"]:
        case_dir = out / row["case_dir"]
        for name in ("post_rtc_full.wav", "post_rtc_reply.wav", "pre_rtc.wav",
                     "probe_result.json", "user_result.json"):
            assert (case_dir / name).exists(), (row["case_id"], name)
    assert (out / "metrics.csv").read_text().count("\n") == MINI_CASES + 1


def run_broken(out: Path, *extra: str) -> tuple[dict, str, set[str]]:
    """A mini run that must fail: its summary, log and the gates that failed."""
    rc, summary, log = run_tier(out, "--only", "p0_hello_endpoint", *extra)
    assert rc == 1 and summary.get("verdict") == "FAIL", log[-3000:]
    report = (out / "report.md").read_text()
    assert report.startswith("# AutoRTC report: FAIL") and "## Suggested fixes" in report
    return summary, log, {g["gate"] for g in summary["gates"] if g["status"] == "FAIL"}


def test_muted_agent_fails_with_a_readable_reason(tmp_path: Path) -> None:
    _require_stack()
    out = tmp_path / "muted"
    summary, log, failed = run_broken(out, "--agent-env", "AGENT_DEBUG_MUTE_TTS=1")
    assert "p0_audio_valid_rate" in failed, summary["gates"]
    assert summary["counts"]["capture_status"] == {"POST_SILENT": 1}
    assert summary["counts"]["retries"] == 1  # retried once in a fresh room, still silent
    assert summary["rows"][0]["pre_rms"] > 0.01  # the agent did speak: only the room heard nothing
    assert "FAIL p0_audio_valid_rate" in log
    assert "lost between the agent's sink and the room" in log, log[-3000:]
    assert "## Cases without a valid capture" in (out / "report.md").read_text()


def test_slow_agent_fails_the_primary_kpi_with_a_readable_reason(tmp_path: Path) -> None:
    _require_stack()
    summary, log, failed = run_broken(tmp_path / "slow", "--omni-env",
                                      "OMNI_DEV_FIRST_TOKEN_DELAY_S=1.5")
    assert {"primary_kpi_regression", "fast_lane_ttft_p95"} <= failed, summary["gates"]
    assert summary["primary_kpi"]["delta"] > 1000
    assert "FAIL primary_kpi_regression" in log, log[-3000:]
