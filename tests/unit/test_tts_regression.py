"""TTS regression suite: metric units on planted data, the evaluation and the profiles.
The suite run end to end on the tiny checkpoint: integration/test_tts_regression_run.py."""

from __future__ import annotations

import json

import numpy as np
import pytest

from streamtalk_common.audio import from_pcm16, to_pcm16
from streamtalk_common.paths import REPO_ROOT
from tools.tts_regression import metrics as M
from tools.tts_regression.suite import (
    CaseResult,
    baseline_dir_for,
    evaluate,
    profile_device,
    thresholds_for,
)

GOLDEN = REPO_ROOT / "golden" / "tts"


def _noise(n: int, seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(n) * 0.2).astype(np.float32)


# --- SNR ---------------------------------------------------------------------------------

def test_snr_identical_is_capped():
    x = _noise(24000, 0)
    assert M.snr_db(x, x.copy()) == M.SNR_CAP_DB


def test_snr_known_noise_level():
    x = _noise(48000, 1).astype(np.float64)
    assert M.snr_db(x, x * 1.1) == pytest.approx(20.0, abs=1e-6)  # error = 0.1 x signal
    assert M.snr_db(x, -x) == pytest.approx(-10 * np.log10(4), abs=1e-6)  # inverted: -6 dB


def test_snr_penalises_length_mismatch():
    x = _noise(24000, 2)
    truncated = M.snr_db(x, x[:12000])
    assert truncated == pytest.approx(10 * np.log10(np.sum(x.astype(np.float64) ** 2)
                                                    / np.sum(x[12000:].astype(np.float64) ** 2)),
                                      abs=1e-6)
    assert truncated < 15.0


def test_snr_of_unrelated_signals_fails_threshold():
    assert M.snr_db(_noise(24000, 3), _noise(24000, 4)) < 1.0


def test_int16_roundtrip_keeps_snr_high():
    x = _noise(24000, 5)
    assert M.snr_db(x, from_pcm16(to_pcm16(x))) > 80.0


# --- repeat detector ----------------------------------------------------------------------

def _random_codes(n: int, seed: int) -> list[int]:
    return [int(v) for v in np.random.default_rng(seed).integers(0, 2048, n)]


def test_code_repeat_detects_planted_loop():
    block = _random_codes(9, 10)
    seq = _random_codes(20, 11) + block * 3 + _random_codes(15, 12)
    found = M.code_repeats(seq)
    assert found == [{"start": 20, "length": 9, "count": 3}]


def test_code_repeat_ignores_two_copies_and_short_blocks():
    block = _random_codes(10, 13)
    assert M.code_repeats(_random_codes(5, 14) + block * 2 + _random_codes(5, 15)) == []
    short = _random_codes(7, 16)  # a 7-frame block, below the 8-frame minimum
    assert M.code_repeats(_random_codes(5, 17) + short * 3 + _random_codes(5, 18)) == []


def test_code_repeat_flags_stuck_token():
    assert M.code_repeats(_random_codes(4, 19) + [7] * 24)[0]["count"] >= 3


def test_a_loop_the_baseline_had_is_known_and_any_other_is_new():
    from tools.tts_regression.suite import new_code_repeats

    block = _random_codes(8, 21)
    loops = M.code_repeats(_random_codes(5, 22) + block * 3 + _random_codes(30, 23) + block * 3)
    assert len(loops) == 2
    assert new_code_repeats(loops, {"code_repeats": loops[:1]}) == (loops[1:], loops[:1])
    assert new_code_repeats(
        loops, {"code_repeats": [dict(loops[0], start=loops[0]["start"] + 1)]}) == (loops, [])
    assert new_code_repeats(loops, None) == (loops, [])  # no baseline: every loop is new


def test_code_repeat_clean_random_sequence():
    assert M.code_repeats(_random_codes(400, 20)) == []


def test_audio_repeat_detects_duplicated_second():
    frames = M.AUDIO_REPEAT_MIN_FRAMES * M.SAMPLES_PER_FRAME
    chunk = _noise(frames, 21)
    pcm = np.concatenate([_noise(3 * M.SAMPLES_PER_FRAME, 22), chunk, chunk,
                          _noise(2 * M.SAMPLES_PER_FRAME, 23)])
    assert M.audio_repeats(pcm) == [{"start": 3, "length": M.AUDIO_REPEAT_MIN_FRAMES, "count": 2}]


def test_audio_repeat_ignores_silence_and_distinct_audio():
    silence = np.zeros(40 * M.SAMPLES_PER_FRAME, dtype=np.float32)
    assert M.audio_repeats(silence) == []
    assert M.audio_repeats(_noise(60 * M.SAMPLES_PER_FRAME, 24)) == []
    # a repeat shorter than 13 frames (1.04 s) is not a repeated fragment by this definition
    chunk = _noise(12 * M.SAMPLES_PER_FRAME, 25)
    assert M.audio_repeats(np.concatenate([chunk, chunk])) == []


# --- bad audio ---------------------------------------------------------------------------

def test_bad_audio_counts_problems():
    spf = M.SAMPLES_PER_FRAME
    pcm = _noise(4 * spf, 26)
    pcm[spf:2 * spf] = 0.0  # the second one-frame packet is silent
    pcm[5] = np.nan
    pcm[10:20] = 1.0
    bad = M.bad_audio(pcm, [1, 1, 2])
    assert bad["silent_packets"] == 1
    assert bad["nonfinite_samples"] == 1
    assert bad["clipped_fraction"] == pytest.approx(10 / (4 * spf - 1))
    assert bad["packet_samples_mismatch"] == 0
    clean = M.bad_audio(_noise(4 * spf, 27), [1, 1, 2])
    assert (clean["silent_packets"], clean["nonfinite_samples"], clean["empty"],
            clean["all_zero"]) == (0, 0, False, False)
    assert M.bad_audio(np.zeros(0, dtype=np.float32), [])["empty"]


# --- gate evaluation on planted results ------------------------------------------------------

def _planted(case_id: str, pcm: np.ndarray, hashes: list[str]) -> CaseResult:
    frames = len(pcm) // M.SAMPLES_PER_FRAME
    return CaseResult(case={"id": case_id, "text": "x", "speaker": "serena", "language": "english"},
                      hashes=hashes, ttfa_ms=[10.0] * len(hashes), wall_ms=[1.0] * len(hashes),
                      stream_pcm=pcm, offline_pcm=pcm.copy(), codes0=_random_codes(frames, 30),
                      packet_frames=[1] * frames, frames=frames, stop_reason="eos",
                      offline_stop_reason="eos")


def test_evaluate_missing_baseline_and_nondeterminism(tmp_path):
    pcm = _noise(10 * M.SAMPLES_PER_FRAME, 31)
    results = [_planted("a", pcm, ["h1", "h2", "h1"])]
    _, gates = evaluate(results, thresholds_for("gpu"), tmp_path / "nowhere")
    assert not gates["determinism"]["pass"]
    assert "2 different PCM hashes over 3 runs" in gates["determinism"]["reasons"][0]
    assert not gates["SNR_vs_baseline"]["pass"]
    assert "baseline missing" in gates["SNR_vs_baseline"]["reasons"][0]
    assert gates["TTFA"]["pass"] and gates["repeat"]["pass"] and gates["stream_bad_audio"]["pass"]


def test_evaluate_duration_drift_fails(tmp_path):
    pcm = _noise(20 * M.SAMPLES_PER_FRAME, 32)
    r = _planted("a", pcm, ["h"])
    # 640 ms longer offline
    r.offline_pcm = np.concatenate([pcm, _noise(8 * M.SAMPLES_PER_FRAME, 33)])
    _, gates = evaluate([r], thresholds_for("gpu"), tmp_path)
    assert not gates["abs_duration_diff_ms"]["pass"]
    assert "diff 640 > 500 ms" in gates["abs_duration_diff_ms"]["reasons"][0]


def test_ci_profile_is_calibrated():
    th = thresholds_for("ci")
    calib = json.loads((REPO_ROOT / "tools" / "tts_regression" / "profiles.json").read_text())[
        "profiles"]["ci"]["calibration"]
    assert isinstance(th["ttfa_p95_ms_max"], int) and th["ttfa_p95_ms_max"] > 0
    assert th["ttfa_p95_ms_max"] >= max(r["p95_ms"] for r in calib["rounds"])
    assert thresholds_for("gpu")["ttfa_p95_ms_max"] == 350


def test_profiles_name_their_device_and_baselines_are_per_device():
    assert (profile_device("ci"), profile_device("gpu")) == ("cpu", "cuda")
    assert "device" not in thresholds_for("gpu")
    assert baseline_dir_for({"device": "cpu", "card": "x86_64"}) == GOLDEN
    assert baseline_dir_for({"device": "cuda", "card": "NVIDIA H200"}) == GOLDEN / "gpu-h200"
    assert (baseline_dir_for({"device": "cuda", "card": "NVIDIA H100 80GB HBM3"})
            == GOLDEN / "gpu-h100-80gb-hbm3")
