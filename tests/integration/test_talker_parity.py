"""Greedy codes of our talker + code predictor == the official qwen-tts implementation.

The official package runs in its own venv (transformers 4.57.3) through
tests/support/parity/official_talker.py; both sides read the same random checkpoint
and the same token ids, in float32 on CPU. Identical codes, frame by frame,
are the evidence that real weights will speak through our implementation.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from tools.talker_parity import (
    OfficialSide,
    ParitySet,
    boundary_set,
    divergence,
    eos_at_min_set,
    mid_size_set,
    our_codes,
    prompt_ids,
    tiny_set,
)
from tts_engine.checkpoint import load_talker, write_talker_files
from tts_engine.prompt import build_prompt


def official_codes(parity_python: Path, model_dir: Path, cases: list[dict],
                   tmp: Path) -> list[list[list[int]]]:
    return OfficialSide(parity_python).codes(model_dir, cases, tmp)


def assert_same_codes(ours: list, theirs: list, cases: list[dict]) -> None:
    for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        d = divergence(a, b)
        assert d["identical"], (
            f"case {i} ({cases[i]['speaker']}, {cases[i]['language']}): ours {len(a)} frames, "
            f"official {len(b)}; first differing frame {d['first_frame']}"
        )


def checkpoint_and_cases(parity_set: ParitySet, model_dir: Path) -> list[dict]:
    parity_set.write_checkpoint(model_dir)
    return parity_set.cases


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tiny_greedy_codes_match_official(parity_python, tmp_path, seed):
    cases = checkpoint_and_cases(tiny_set(seed), tmp_path)
    ours = our_codes(tmp_path, cases)
    assert_same_codes(ours, official_codes(parity_python, tmp_path, cases, tmp_path), cases)
    # The shaped tiny weights end by EOS at a length that grows with the text.
    lengths = [len(c) for c in ours]
    assert all(2 <= n < 119 for n in lengths), lengths
    assert lengths == sorted(lengths), lengths


def test_mid_size_greedy_codes_match_official(parity_python, tmp_path):
    """A wider, deeper, unshaped geometry (hidden 256, 6 talker + 3 predictor layers)."""
    cases = checkpoint_and_cases(mid_size_set(), tmp_path)
    assert_same_codes(our_codes(tmp_path, cases),
                      official_codes(parity_python, tmp_path, cases, tmp_path), cases)


def test_boundary_cases_match_official(parity_python, tmp_path):
    """1-frame output, the max_new_tokens cap on a long text, and a 300-frame run."""
    cases = checkpoint_and_cases(boundary_set(), tmp_path)
    ours = our_codes(tmp_path, cases)
    assert [len(c) for c in ours] == [1, 8, 300]
    assert_same_codes(ours, official_codes(parity_python, tmp_path, cases, tmp_path), cases)


def test_eos_at_min_new_tokens_matches_official(parity_python, tmp_path):
    """EOS strongest from the first frame on: both sides stop after min_new_tokens (2) frames."""
    cases = checkpoint_and_cases(eos_at_min_set(), tmp_path)
    ours = our_codes(tmp_path, cases)
    assert [len(c) for c in ours] == [2, 2]
    assert_same_codes(ours, official_codes(parity_python, tmp_path, cases, tmp_path), cases)


def test_official_saved_checkpoint_loads_in_ours(parity_python, tmp_path):
    """A checkpoint written by the official classes' save_pretrained loads and decodes here."""
    from tts_engine.model.configs import preset_config

    raw = preset_config("tiny")
    config_path = tmp_path / "config_in.json"
    config_path.write_text(json.dumps(raw))
    out = tmp_path / "official_ckpt"
    OfficialSide(parity_python).run("save-random", config_path, out, 11)
    model = load_talker(out)  # with the config.json that save_pretrained wrote
    weights = model.state_dict()
    assert weights["talker.codec_head.weight"].shape == (3072, 64)
    assert float(weights["talker.model.layers.0.self_attn.q_proj.weight"].std()) > 0.01
    # The official classes cannot reload their own saved config.json (its
    # speaker_encoder_config gains a model_type key their __init__ refuses), so
    # the official side of the comparison reads the original config.
    (out / "config.json").write_text(json.dumps(raw))
    rng = random.Random(11)
    cases = [{"ids": prompt_ids(4, rng), "speaker": "serena", "language": "auto",
              "max_new_tokens": 6}]
    assert_same_codes(our_codes(out, cases), official_codes(parity_python, out, cases, tmp_path),
                      cases)


def test_prompt_length_follows_official_layout(tmp_path):
    write_talker_files(tmp_path, "tiny", seed=0)
    model = load_talker(tmp_path)
    rng = random.Random(0)
    ids = prompt_ids(7, rng)
    with torch.no_grad():
        named = build_prompt(model.talker, model.config, ids, "ryan", "english")
        auto = build_prompt(model.talker, model.config, ids, "ryan", "auto")
    assert named.embeds.shape[1] == 7 + 11
    assert auto.embeds.shape[1] == 7 + 10
    assert named.text_token_count == 7
