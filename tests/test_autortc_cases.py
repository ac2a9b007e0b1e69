"""AutoRTC case recipes and their reproducible rendering (espeak-ng, noise, spikes)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from infra_fixtures import require

from tools.autortc.common import read_wav
from tools.autortc.make_cases import RATE, load_cases, make_case
from tools.autortc.user_bot import last_speech_index

CASES = Path(__file__).resolve().parent.parent / "tools" / "autortc" / "cases"


def test_recipes_have_the_promised_shape() -> None:
    mini = load_cases(CASES / "mini_cases.json")
    assert len(mini) == 4 and all(c["priority"] == "P0" for c in mini)
    assert any("barge_in" in c for c in mini) and any("noise" in c for c in mini)
    every = load_cases(CASES / "all_cases.json")
    assert len(every) == 16 and len({c["id"] for c in every}) == 16
    assert sum(c["priority"] == "P0" for c in every) == 12
    assert sum(c["priority"] == "P1" for c in every) == 4
    assert any("spikes" in c and c["priority"] == "P1" for c in every)
    assert {c["id"] for c in mini} <= {c["id"] for c in every}


def test_rendering_is_deterministic_and_knows_its_eot(tmp_path: Path) -> None:
    require(shutil.which("espeak-ng") is not None, "espeak-ng missing: run scripts/install_system_deps.sh")
    case = {"id": "t", "text": "Hello there.", "lead_s": 0.3, "tail_s": 1.0,
            "noise": {"kind": "pink", "rms": 0.004, "seed": 1},
            "spikes": {"count": 2, "amplitude": 0.95, "seed": 2}}
    a = make_case(case, tmp_path / "a")["wav"]
    b = make_case(case, tmp_path / "b")["wav"]
    xa, ra = read_wav(a)
    xb, _ = read_wav(b)
    assert ra == RATE and np.array_equal(xa, xb)
    meta = json.loads(a.with_suffix(".json").read_text())
    last = last_speech_index(xa, wav=a)
    assert last == meta["last_speech_sample"]
    assert 0.3 * RATE < last < len(xa) - 0.9 * RATE  # speech ends before the 1 s tail
    assert int(np.sum(np.abs(xa) >= 0.9)) >= 2 * 96 * 0.9  # the planted spikes
