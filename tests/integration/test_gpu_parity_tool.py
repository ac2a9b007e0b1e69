"""tools/gpu_parity.py on the CPU: its float32 comparison against the official
implementation (parity venv), its engine driver and its divergence explanation.
The bfloat16 comparisons need CUDA and run on a GPU host (scripts/gpu_bench.sh parity)."""

from __future__ import annotations

import json

import pytest
import torch

from tools import gpu_parity
from tools.talker_parity import OfficialSide, boundary_set, eos_at_min_set, tiny_set
from tts_engine.config import EngineConfig
from tts_engine.runtime import TTSEngine


def test_float32_rows_match_official_on_cpu(parity_python, tmp_path):
    argv = ["--out", str(tmp_path), "--presets", "tiny", "--device", "cpu",
            "--official-python", str(parity_python)]
    assert gpu_parity.main(argv) == 0
    result = json.loads((tmp_path / "gpu_parity.json").read_text())
    rows = [r for r in result["rows"] if r["comparison"] == gpu_parity.FLOAT32_COMPARISON]
    assert len(rows) == len(tiny_set(0).cases) == len(result["rows"])
    assert all(r["first_frame"] is None and r["frames_a"] == r["frames_b"] > 0 for r in rows), rows
    assert result["float32_identical"] is True
    assert result["rope_as_on_cpu"] == {"tiny": True}
    assert [s["comparison"] for s in result["skipped"]] == [
        name for name, *_ in gpu_parity.COMPARISONS[1:]]
    assert result["environment"]["official"]["transformers"] == "4.57.3"
    assert result["environment"]["official"]["qwen_tts"]


@pytest.mark.parametrize("make_set, lengths",
                         [(boundary_set, [1, 8, 300]), (eos_at_min_set, [2, 2])])
def test_engine_driver_equals_official_float32_on_cpu(parity_python, tmp_path, make_set, lengths):
    """The engine stepped row by row, as the tool drives it on a GPU, stops where the
    official generate stops: its frame cap, EOS only from min_new_tokens on."""
    parity_set = make_set()
    parity_set.write_checkpoint(tmp_path)
    engine = TTSEngine(EngineConfig(
        model_dir=str(gpu_parity.engine_model_dir(parity_set, tmp_path)), device="cpu",
        max_batch=1))
    try:
        ours = gpu_parity.engine_codes(engine, parity_set.cases)
    finally:
        engine.close()
    assert [len(c) for c in ours] == lengths
    assert ours == OfficialSide(parity_python).codes(tmp_path, parity_set.cases, tmp_path)


def test_gap_explains_where_bfloat16_parts_from_float32(tmp_path):
    """Ours in bfloat16 against ours in float32: where they part, the bfloat16 side's own
    pick scores at least the float32 side's pick (it is its argmax), by a rounding-size gap."""
    parity_set = tiny_set(0)
    parity_set.write_checkpoint(tmp_path)
    cpu = torch.device("cpu")
    bf16, logits, gen = gpu_parity.eager_codes(tmp_path, parity_set.cases, cpu, torch.bfloat16)
    fp32, _, _ = gpu_parity.eager_codes(tmp_path, parity_set.cases, cpu, torch.float32)
    rows = gpu_parity.compare("tiny", "bf16 vs fp32", bf16, fp32, parity_set.cases, gen, logits)
    parted = [r for r in rows if r["first_frame"] is not None]
    assert parted, "bfloat16 matched float32 everywhere: nothing to explain"
    assert all(isinstance(r["gap"], float) and 0 <= r["gap"] < 0.05 for r in parted), parted
    # the tape holds one call per frame tried: the frames plus the EOS frame (or none at the cap)
    assert all(len(tape[0]) >= len(codes) and len(tape[1]) == len(codes)
               for tape, codes in zip(logits, bf16))


def test_presets_parse_with_the_custom_geometry_commas():
    sets = gpu_parity.parse_presets("tiny,custom:256,6,256,3,0.6b")
    assert [s.preset for s in sets] == ["tiny", "custom:256,6,256,3", "0.6b"]
    with pytest.raises(ValueError, match="unknown preset 'custom:64,2,64,1'; valid: tiny"):
        gpu_parity.parse_presets("custom:64,2,64,1")


def test_bad_arguments_exit_2(tmp_path, capsys):
    assert gpu_parity.main(["--out", str(tmp_path), "--presets", "small"]) == 2
    assert "unknown preset 'small'" in capsys.readouterr().err
    assert gpu_parity.main(["--out", str(tmp_path),
                            "--official-python", str(tmp_path / "none")]) == 2
    assert "--official-python" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert gpu_parity.main(["--out", str(tmp_path), "--device", "cuda"]) == 2
        assert "no CUDA device" in capsys.readouterr().err
