"""Greedy codes of our talker + code predictor == the official qwen-tts implementation.

The official package runs in its own venv (transformers 4.57.3) through
tests/parity/official_talker.py; both sides read the same random checkpoint
and the same token ids, in float32 on CPU. Identical codes, frame by frame,
are the evidence that real weights will speak through our implementation.
"""

from __future__ import annotations

import json
import random
import subprocess
from pathlib import Path

import pytest
import torch

from tts_engine.checkpoint import load_talker, write_talker_files
from tts_engine.codegen import CodeGenerator
from tts_engine.prompt import build_prompt
from tts_engine.sampling import SamplingParams

OFFICIAL = Path(__file__).parent / "parity" / "official_talker.py"
ROLE, SUFFIX = [151644, 77091, 198], [151645, 198, 151644, 77091, 198]


def run_official(parity_python: Path, *args: str, timeout: int = 900) -> None:
    proc = subprocess.run(
        [str(parity_python), str(OFFICIAL), *map(str, args)], capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, f"official run failed:\n{proc.stderr[-3000:]}"


def prompt_ids(n_text: int, rng: random.Random) -> list[int]:
    return ROLE + [rng.randrange(0, 151643) for _ in range(n_text)] + SUFFIX


def our_codes(model_dir: Path, cases: list[dict]) -> list[list[list[int]]]:
    model = load_talker(model_dir)
    gen = CodeGenerator(model.talker, model.config)
    out = []
    for case in cases:
        prompt = build_prompt(model.talker, model.config, case["ids"], case["speaker"], case["language"])
        # The official loop samples max_new_tokens tokens but completes a frame only
        # for each token before the last: max_new_tokens - 1 frames at most.
        codes, _ = gen.generate(prompt, SamplingParams(), case["max_new_tokens"] - 1)
        out.append(codes.tolist())
    return out


def official_codes(parity_python: Path, model_dir: Path, cases: list[dict], tmp: Path) -> list[list[list[int]]]:
    cases_path, out_path = tmp / "cases.json", tmp / "official.json"
    cases_path.write_text(json.dumps(cases))
    run_official(parity_python, "generate", model_dir, cases_path, out_path)
    return [r["codes"] for r in json.loads(out_path.read_text())]


def assert_same_codes(ours: list, theirs: list, cases: list[dict]) -> None:
    for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        first = next((t for t, (fa, fb) in enumerate(zip(a, b)) if fa != fb), None)
        assert a == b, (
            f"case {i} ({cases[i]['speaker']}, {cases[i]['language']}): ours {len(a)} frames, "
            f"official {len(b)}; first differing frame {first}"
        )


VOICES = [
    ("serena", "auto"), ("ryan", "english"), ("eric", "auto"), ("dylan", "chinese"),
    ("sohee", "korean"), ("ono_anna", "japanese"), ("uncle_fu", "auto"), ("aiden", "french"),
]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tiny_greedy_codes_match_official(parity_python, tmp_path, seed):
    write_talker_files(tmp_path, "tiny", seed)
    rng = random.Random(seed)
    cases = [
        {"ids": prompt_ids(n, rng), "speaker": spk, "language": lang, "max_new_tokens": 120}
        for n, (spk, lang) in zip([1, 3, 8, 15, 24], rng.sample(VOICES, 5))
    ]
    ours = our_codes(tmp_path, cases)
    assert_same_codes(ours, official_codes(parity_python, tmp_path, cases, tmp_path), cases)
    # The shaped tiny weights end by EOS at a length that grows with the text.
    lengths = [len(c) for c in ours]
    assert all(2 <= n < 119 for n in lengths), lengths
    assert lengths == sorted(lengths), lengths


def test_mid_size_greedy_codes_match_official(parity_python, tmp_path):
    """A wider, deeper, unshaped geometry (hidden 256, 6 talker + 3 predictor layers)."""
    write_talker_files(tmp_path, "custom:256,6,256,3", seed=7)
    rng = random.Random(7)
    cases = [
        {"ids": prompt_ids(n, rng), "speaker": spk, "language": lang, "max_new_tokens": 41}
        for n, (spk, lang) in zip([2, 9, 30], VOICES[:3])
    ]
    assert_same_codes(our_codes(tmp_path, cases), official_codes(parity_python, tmp_path, cases, tmp_path), cases)


def test_boundary_cases_match_official(parity_python, tmp_path):
    """1-frame output, the max_new_tokens cap on a long text, and a 300-frame run."""
    write_talker_files(tmp_path, "tiny", seed=3, frames_per_text=40.0)
    rng = random.Random(3)
    cases = [
        {"ids": prompt_ids(5, rng), "speaker": "serena", "language": "auto", "max_new_tokens": 2},
        {"ids": prompt_ids(40, rng), "speaker": "ryan", "language": "english", "max_new_tokens": 9},
        {"ids": prompt_ids(12, rng), "speaker": "vivian", "language": "chinese", "max_new_tokens": 301},
    ]
    ours = our_codes(tmp_path, cases)
    assert [len(c) for c in ours] == [1, 8, 300]
    assert_same_codes(ours, official_codes(parity_python, tmp_path, cases, tmp_path), cases)


def test_eos_at_min_new_tokens_matches_official(parity_python, tmp_path):
    """EOS strongest from the first frame on: both sides stop after min_new_tokens (2) frames."""
    write_talker_files(tmp_path, "tiny", seed=4, frames_per_text=0.0)
    rng = random.Random(4)
    cases = [{"ids": prompt_ids(n, rng), "speaker": "aiden", "language": "english", "max_new_tokens": 50} for n in (1, 10)]
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
    run_official(parity_python, "save-random", config_path, out, 11)
    model = load_talker(out)  # with the config.json that save_pretrained wrote
    weights = model.state_dict()
    assert weights["talker.codec_head.weight"].shape == (3072, 64)
    assert float(weights["talker.model.layers.0.self_attn.q_proj.weight"].std()) > 0.01
    # The official classes cannot reload their own saved config.json (its
    # speaker_encoder_config gains a model_type key their __init__ refuses), so
    # the official side of the comparison reads the original config.
    (out / "config.json").write_text(json.dumps(raw))
    rng = random.Random(11)
    cases = [{"ids": prompt_ids(4, rng), "speaker": "serena", "language": "auto", "max_new_tokens": 6}]
    assert_same_codes(our_codes(out, cases), official_codes(parity_python, out, cases, tmp_path), cases)


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
