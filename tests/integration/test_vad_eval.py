"""`python -m tools.vad_eval`: the agent's Silero VAD over rendered AutoRTC-style cases (own
recipes, so the suite's case list may change freely), and the scoring of its segments."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support.infra import REPO_ROOT, require, service_env

from tools.vad_eval import Segment, score

pytestmark = pytest.mark.timeout(300)

CASES = {"cases": [
    {"id": "clean", "text": "Hello there, what is the weather?", "voice": "en-us", "wpm": 160,
     "lead_s": 0.3, "tail_s": 1.2},
    {"id": "noisy", "text": "Who are you?", "voice": "en-gb", "wpm": 150, "lead_s": 0.5,
     "tail_s": 1.2, "noise": {"kind": "pink", "rms": 0.004, "seed": 11},
     "barge_in": {"text": "Thank you.", "voice": "en-us", "wpm": 160, "tail_s": 1.0}},
    {"id": "mute", "text": "Nobody hears this.", "gain": 0.0, "lead_s": 0.3, "tail_s": 0.5},
]}


def vad_eval(tmp_path: Path, *args: str,
             **env: str) -> tuple[subprocess.CompletedProcess[str], dict]:
    require(shutil.which("espeak-ng") is not None,
            "espeak-ng missing: run scripts/install_system_deps.sh")
    cases = tmp_path / "cases"
    cases.mkdir(exist_ok=True)
    (cases / "suite.json").write_text(json.dumps(CASES))
    (cases / "notes.json").write_text(json.dumps({"comment": "not a case file"}))  # passed over
    out = tmp_path / "vad.json"
    proc = subprocess.run([sys.executable, "-m", "tools.vad_eval", "--cases", str(cases), *args,
                           "--out", str(out)],
                          cwd=REPO_ROOT, env=service_env(STREAMTALK_OUTPUT=str(tmp_path), **env),
                          capture_output=True, text=True, timeout=240)
    return proc, json.loads(out.read_text()) if out.exists() else {}


def test_score_names_false_triggers_misses_and_open_speech() -> None:
    segs = [Segment(0.1, 0.3, 0.5), Segment(0.9, 2.05, 2.25), Segment(3.0, 3.2, 3.4)]
    r = score("c", True, segs, first_s=1.0, eot_s=2.0)
    assert (r.end_error_ms, r.detect_ms, r.false_triggers, r.error) == (50.0, 250.0, 2, "")
    assert (score("c", False, [Segment(0.1, 0.3, 0.5)], 1.0, 2.0).error
            == "the VAD heard no speech in the case's speech")
    assert (score("c", False, [Segment(1.1)], 1.0, 2.0).error
            == "the VAD still heard speech when the audio ended")


def test_end_of_turn_errors_and_false_triggers_on_rendered_cases(tmp_path: Path) -> None:
    proc, report = vad_eval(tmp_path, "--only", "clean,noisy")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    by_case = {c["case"]: c for c in report["cases"]}
    assert set(by_case) == {"clean", "noisy", "noisy.barge"}
    silence_ms = report["vad"]["silence_ms"]
    for c in by_case.values():
        assert c["error"] == "" and c["false_triggers"] == 0
        assert abs(c["end_error_ms"]) < 300  # the VAD ends the speech near the known last sample
        # the event waits VAD_SILENCE_MS of silence
        assert c["detect_ms"] >= c["end_error_ms"] + silence_ms
    s = report["summary"]
    assert (s["cases"], s["noise_cases"], s["false_triggers_noise_cases"],
            s["failed"]) == (3, 1, 0, [])
    assert s["end_error_ms_p50"] is not None and s["detect_ms_p95"] >= s["detect_ms_p50"]
    assert "against the known end of turn" in proc.stdout

    # the agent's setting reaches the VAD: a longer silence delays the event by as much
    _, longer = vad_eval(tmp_path, "--only", "clean", VAD_SILENCE_MS="600")
    [c] = longer["cases"]
    assert longer["vad"]["silence_ms"] == 600
    assert c["detect_ms"] - c["end_error_ms"] >= 600 \
        > by_case["clean"]["detect_ms"] - by_case["clean"]["end_error_ms"]


def test_a_missed_case_fails(tmp_path: Path) -> None:
    proc, report = vad_eval(tmp_path, "--only", "mute")
    assert proc.returncode == 1
    assert report["summary"]["failed"] == ["mute"]
    assert report["cases"][0]["error"] == "the VAD heard no speech in the case's speech"


def test_bad_arguments_are_refused_with_what_is_valid(tmp_path: Path) -> None:
    proc, _ = vad_eval(tmp_path, "--only", "nope")
    assert proc.returncode == 2 and "unknown case(s) nope; valid: clean, mute, noisy" in proc.stderr
    proc, _ = vad_eval(tmp_path, "--only", "clean", VAD_THRESHOLD="2")
    assert proc.returncode == 2 and "VAD_THRESHOLD=2.0 is out of range" in proc.stderr
