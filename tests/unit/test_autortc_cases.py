"""AutoRTC case recipes and their reproducible rendering (espeak-ng, noise, spikes)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from support.infra import require

from streamtalk_common.paths import REPO_ROOT
from tools.autortc.common import read_wav
from tools.autortc.make_cases import RATE, check_case, load_cases, make_case
from tools.autortc.user_bot import speech_timing

CASES = REPO_ROOT / "tools" / "autortc" / "cases"


def test_recipes_have_the_promised_shape() -> None:
    mini = load_cases(CASES / "mini_cases.json")
    assert len(mini) == 6 and all(c["priority"] == "P0" for c in mini)
    assert any("barge_in" in c for c in mini) and any("noise" in c for c in mini)
    assert {c.get("turn_taking") for c in mini} == {None, "pause", "backchannel", "barge_in"}
    every = load_cases(CASES / "all_cases.json")
    assert len(every) == 20 and len({c["id"] for c in every}) == 20
    assert sum(c["priority"] == "P0" for c in every) == 16
    assert sum(c["priority"] == "P1" for c in every) == 4
    kinds = [c["turn_taking"] for c in every if "turn_taking" in c]
    assert sorted(kinds) == ["backchannel", "barge_in", "barge_in", "noise", "pause"]
    for c in every:  # the pause case pauses 0.8-1.2 s; the others act during reply 1
        if c.get("turn_taking") == "pause":
            assert all(0.8 <= part["pause_s"] <= 1.2 for part in c["then"])
        elif "turn_taking" in c:
            assert c["barge_in"]["after_reply_start_ms"] > 0
            assert c.get("expect_replies", 1) == (2 if c["turn_taking"] == "barge_in" else 1)
            assert c["turn_taking"] == "barge_in" or c["settle_s"] >= 3.0
    assert any("spikes" in c and c["priority"] == "P1" for c in every)
    assert {c["id"] for c in mini} <= {c["id"] for c in every}


def test_rendering_is_deterministic_and_knows_its_eot(tmp_path: Path) -> None:
    require(shutil.which("espeak-ng") is not None,
            "espeak-ng missing: run scripts/install_system_deps.sh")
    case = {"id": "t", "text": "Hello there.", "lead_s": 0.3, "tail_s": 1.0,
            "noise": {"kind": "pink", "rms": 0.004, "seed": 1},
            "spikes": {"count": 2, "amplitude": 0.95, "seed": 2}}
    a = make_case(case, tmp_path / "a")["wav"]
    b = make_case(case, tmp_path / "b")["wav"]
    xa, ra = read_wav(a)
    xb, _ = read_wav(b)
    assert ra == RATE and np.array_equal(xa, xb)
    meta = json.loads(a.with_suffix(".json").read_text())
    last = speech_timing(xa, wav=a)["last_speech_sample"]
    assert last == meta["last_speech_sample"] and meta["pauses"] == []
    assert 0.3 * RATE < last < len(xa) - 0.9 * RATE  # speech ends before the 1 s tail
    assert int(np.sum(np.abs(xa) >= 0.9)) >= 2 * 96 * 0.9  # the planted spikes


def test_a_pause_case_knows_where_its_pause_lies(tmp_path: Path) -> None:
    require(shutil.which("espeak-ng") is not None,
            "espeak-ng missing: run scripts/install_system_deps.sh")
    case = {"id": "p", "text": "five five five,", "then": [{"pause_s": 1.0, "text": "one two."}],
            "lead_s": 0.3, "tail_s": 1.0}
    wav = make_case(case, tmp_path)["wav"]
    x, _ = read_wav(wav)
    t = speech_timing(x, wav=wav)
    (a, b), = t["pauses"]
    assert b - a == RATE  # exactly the 1.0 s asked for
    assert np.max(np.abs(x[a:b])) == 0.0  # silent inside
    assert np.max(np.abs(x[a - 480:a])) > 0.002 and np.max(np.abs(x[b:b + 4800])) > 0.002
    assert t["first_speech_sample"] < a < b < t["last_speech_sample"]


def test_a_burst_case_renders_noise_without_speech(tmp_path: Path) -> None:
    case = {"id": "b", "burst": {"kind": "pink", "rms": 0.15, "seconds": 0.35, "seed": 31},
            "lead_s": 0.1, "tail_s": 0.5}
    wav = make_case(case, tmp_path)["wav"]
    x, _ = read_wav(wav)
    t = speech_timing(x, wav=wav)
    assert abs(t["first_speech_sample"] - int(0.1 * RATE)) <= 48  # a sharp attack
    assert 0.1 * RATE < t["last_speech_sample"] <= (0.1 + 0.35) * RATE
    assert np.max(np.abs(x[:int(0.1 * RATE)])) == 0.0 and np.max(np.abs(x)) > 0.1


def test_bad_turn_taking_recipes_are_refused_with_what_is_valid() -> None:
    with pytest.raises(SystemExit, match="known: pause, backchannel, noise, barge_in"):
        check_case({"id": "x", "text": "hi", "turn_taking": "cough"})
    with pytest.raises(SystemExit, match="needs a 'barge_in' recipe"):
        check_case({"id": "x", "text": "hi", "turn_taking": "backchannel"})
    with pytest.raises(SystemExit, match="needs 'then' parts"):
        check_case({"id": "x", "text": "hi", "turn_taking": "pause"})
    with pytest.raises(ValueError, match="pause_s"):
        make_case({"id": "x", "text": "hi", "then": [{"pause_s": 0, "text": "yo"}]},
                  Path("/nonexistent"))
