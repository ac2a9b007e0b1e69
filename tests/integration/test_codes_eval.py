"""`python -m tools.codes_eval` on real codes dumps of the tiny engine (written by
`python -m tts_engine synthesize --dump-codes`) and on deliberately altered copies of them."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from streamtalk_common.paths import REPO_ROOT
from tools.codes_eval import codebook_stats, frame_runs
from tts_engine.runtime.code_dump import read_codes, read_dump_meta

TEXTS = {"hello": "Hello there, how are you today?", "weather": "It is sunny and warm outside."}

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def dumps(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("codes")
    for name, text in TEXTS.items():
        subprocess.run([sys.executable, "-m", "tts_engine", "synthesize",
                        "--model-dir", str(tiny_model_dir), "--text", text, "--speaker", "serena",
                        "--language", "english", "--device", "cpu",
                        "--out", str(folder / "wav" / f"{name}.wav"), "--dump-codes", str(folder)],
                       check=True, capture_output=True, timeout=300, cwd=REPO_ROOT)
    return folder


def codes_eval(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], dict]:
    out = tmp_path / "eval.json"
    proc = subprocess.run([sys.executable, "-m", "tools.codes_eval", *args, "--out", str(out)],
                          capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)
    return proc, json.loads(out.read_text()) if out.exists() else {}


def altered(src: Path, dst: Path, change) -> Path:  # noqa: ANN001
    codes = read_codes(src)
    np.save(dst, change(codes.copy()))
    shutil.copy(src.with_suffix(".json"), dst.with_suffix(".json"))
    return dst


def test_codebook_stats_and_runs_by_hand() -> None:
    assert codebook_stats(np.array([7, 7, 9, 9])) == {"unique": 2, "entropy_bits": 1.0,
                                                      "top_code": 7, "top_share": 0.5}
    assert codebook_stats(np.array([4, 4, 4]))["entropy_bits"] == 0.0
    frames = np.array([[1] * 16, [1] * 16, [1] * 16, [2] * 16, [2] * 16, [3] * 16])
    assert frame_runs(frames, 2) == [{"start": 0, "length": 3}, {"start": 3, "length": 2}]
    assert frame_runs(frames, 3) == [{"start": 0, "length": 3}]


def test_stats_of_real_dumps(dumps: Path, tmp_path: Path) -> None:
    proc, report = codes_eval(tmp_path, "stats", str(dumps))
    assert proc.returncode == 0, proc.stderr
    by_name = {Path(d["dump"]).stem: d for d in report["dumps"]}
    assert set(by_name) == set(TEXTS)
    for name, d in by_name.items():
        codes, meta = read_codes(dumps / f"{name}.npy"), read_dump_meta(dumps / f"{name}.npy")
        assert d["text"] == TEXTS[name] and d["frames"] == len(codes) == meta["frames"] > 0
        assert meta["text_tokens"] > 0
        assert d["frames_per_text_token"] == round(len(codes) / meta["text_tokens"], 2)
        # the tiny checkpoint stops at EOS for these texts; the EOS frame is the one after the
        # last stored
        assert d["stop_reason"] == "eos" and d["eos_frame"] == len(codes)
        assert len(d["codebooks"]) == 16
        for k, cb in enumerate(d["codebooks"]):
            assert cb["unique"] == len(np.unique(codes[:, k]))
            assert 0.0 <= cb["entropy_bits"] <= np.log2(cb["unique"]) + 1e-9
    assert "codes dumps" in proc.stdout and "eos_frame" in proc.stdout


def test_a_stuck_stretch_is_reported_as_a_run(dumps: Path, tmp_path: Path) -> None:
    def freeze(codes: np.ndarray) -> np.ndarray:
        codes[5:11] = codes[5]  # frames 5-10 repeat frame 5
        return codes

    stuck = altered(dumps / "hello.npy", tmp_path / "stuck.npy", freeze)
    proc, report = codes_eval(tmp_path, "stats", str(stuck), "--min-run", "4")
    assert proc.returncode == 0, proc.stderr
    [d] = report["dumps"]
    assert {"start": 5, "length": 6} in d["repeat_runs"] and d["longest_run"] >= 6


def test_diff_finds_the_first_altered_frame_and_codebook(dumps: Path, tmp_path: Path) -> None:
    a = dumps / "hello.npy"

    def bump(frame: int, book: int):  # noqa: ANN202
        def change(codes: np.ndarray) -> np.ndarray:
            codes[frame, book] += 1
            codes[frame + 3, 0] += 1  # a later difference must not hide the first one
            return codes
        return change

    b = altered(a, tmp_path / "predictor.npy", bump(7, 5))
    proc, report = codes_eval(tmp_path, "diff", str(a), str(b))
    assert proc.returncode == 1, proc.stderr
    assert (report["first_frame"], report["codebooks"], report["differing_frames"]) == (7, [5], 2)
    assert report["first_codebook_source"] == "code predictor"
    assert report["codes_b"] == [report["codes_a"][0] + 1]

    b = altered(a, tmp_path / "talker.npy", bump(2, 0))
    _, report = codes_eval(tmp_path, "diff", str(a), str(b))
    assert (report["first_frame"], report["codebooks"],
            report["first_codebook_source"]) == (2, [0], "talker")

    frames = len(read_codes(a))
    b = altered(a, tmp_path / "short.npy", lambda codes: codes[: frames - 4])
    proc, report = codes_eval(tmp_path, "diff", str(a), str(b))
    assert proc.returncode == 1 and report["first_frame"] == frames - 4 \
        and report["codebooks"] == []

    proc, report = codes_eval(tmp_path, "diff", str(a), str(a))
    assert proc.returncode == 0 and report["identical"] and report["differing_frames"] == 0


def test_two_texts_differ_from_the_first_frame_on(dumps: Path, tmp_path: Path) -> None:
    proc, report = codes_eval(tmp_path, "diff", str(dumps / "hello.npy"),
                              str(dumps / "weather.npy"))
    assert proc.returncode == 1 and not report["identical"] and report["first_frame"] is not None
    assert "first divergence" in proc.stdout


def test_bad_input_is_refused_with_what_is_valid(dumps: Path, tmp_path: Path) -> None:
    proc, _ = codes_eval(tmp_path, "stats", str(tmp_path / "missing"))
    assert proc.returncode == 2 and "no such file or folder" in proc.stderr
    proc, _ = codes_eval(tmp_path, "diff", str(dumps / "hello.npy"), str(dumps / "hello.json"))
    assert proc.returncode == 2 and "not a codes dump" in proc.stderr
    np.save(tmp_path / "wrong.npy", np.zeros((4, 8), dtype=np.int64))
    proc, _ = codes_eval(tmp_path, "stats", str(tmp_path / "wrong.npy"))
    assert proc.returncode == 2 and "shape [frames, 16]" in proc.stderr
    proc, _ = codes_eval(tmp_path, "stats", str(dumps), "--min-run", "1")
    assert proc.returncode == 2 and "at least 2 frames" in proc.stderr
