"""The TTS regression suite end to end (`python -m tools.tts_regression`, on the tiny
checkpoint): the fast run against golden/tts, a changed checkpoint that must fail the SNR
gate, and the gpu profile without CUDA. Its metrics on planted data: unit/test_tts_regression.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from streamtalk_common.paths import REPO_ROOT, cache_root
from tools.tts_regression.suite import CPU_BASELINE
from tts_engine.checkpoint import ensure_checkpoint


def _env(tmp_path: Path) -> dict:
    env = dict(os.environ)
    env["STREAMTALK_OUTPUT"] = str(tmp_path)
    return env


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU the gpu profile runs")
def test_gpu_profile_without_cuda_says_why(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "tools.tts_regression", "--profile", "gpu",
                           "--out", str(tmp_path)],
                          cwd=REPO_ROOT, env=_env(tmp_path), capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "'cuda' requested but CUDA is not available" in proc.stderr
    assert "(the profile runs on cuda)" in proc.stderr


def test_fast_ci_run_passes_against_golden(tmp_path):
    assert (CPU_BASELINE / "baseline.json").is_file(), "golden/tts baseline missing"
    proc = subprocess.run(["bash", str(REPO_ROOT / "scripts" / "run_ci_regression.sh"),
                           "--mode", "fast", "--profile", "ci"],
                          cwd=REPO_ROOT, env=_env(tmp_path), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    latest = tmp_path / "tts_regression" / "latest"
    brief = json.loads((latest / "summary_brief.json").read_text())
    assert brief["pass"] and brief["mode"] == "fast" and brief["profile"] == "ci"
    assert set(brief["gates"]) == {"determinism", "abs_duration_diff_ms", "repeat",
                                   "SNR_vs_baseline", "TTFA", "stream_bad_audio"}
    summary = json.loads((latest / "summary.json").read_text())
    assert summary["runs_per_case"] == 3 and len(summary["cases"]) >= 8
    # bit-exact (>= 100 dB) on the CPU kind that recorded the baseline; another kernel path
    # (AVX-512 against AVX2) rounds float32 sums differently: 97 dB measured on such a CPU.
    # Any real change to the audio (another checkpoint: see below) is far below 90 dB.
    assert summary["gates"]["SNR_vs_baseline"]["min_vs_baseline_db"] >= 90.0
    assert not (latest / "wav").exists()  # no WAVs in fast mode
    assert summary["engine"]["device"] == "cpu" and summary["engine"]["dtype"] == "float32"
    assert summary["engine"]["cuda_graphs"] is False  # graphs are a CUDA thing
    assert summary["baseline"]["dir"] == "golden/tts"
    assert "CPU (" in proc.stdout and "float32, decoder tf32, eager" in proc.stdout


def test_changed_checkpoint_fails_snr_gate(tmp_path):
    other = ensure_checkpoint(cache_root() / "checkpoints" / "tiny-seed1", "tiny", seed=1)
    proc = subprocess.run([sys.executable, "-m", "tools.tts_regression", "--mode", "fast",
                           "--profile", "ci", "--model-dir", str(other),
                           "--cases", "en_short_serena,zh_short_vivian", "--out", str(tmp_path)],
                          cwd=REPO_ROOT, env=_env(tmp_path), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "[FAIL] SNR_vs_baseline" in proc.stdout
    assert "SNR vs golden baseline" in proc.stdout
    brief = json.loads((tmp_path / "latest" / "summary_brief.json").read_text())
    assert not brief["pass"] and not brief["gates"]["SNR_vs_baseline"]["pass"]
    # only the audio changed, not the engine's determinism
    assert brief["gates"]["determinism"]["pass"]
