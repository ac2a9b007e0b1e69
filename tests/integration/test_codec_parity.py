"""Our codec decoder == the official qwen-tts speech tokenizer on the same checkpoint.

We write a random checkpoint; the official `Qwen3TTSTokenizer.from_pretrained` loads it
in the parity venv (tests/support/parity/official_codec.py, transformers 4.57.3) and decodes
the same codes through its public `decode`. The official decode chunks at 300 frames
with 25 frames of context, so lengths stop at 300: up to there it is one full causal
decode, like ours. Checked on the tiny preset and on `mid` (grouped-query attention,
head_dim != hidden / heads, as the released model has), float32 on CPU.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from streamtalk_common.paths import REPO_ROOT
from tts_engine.codec_checkpoint import write_speech_tokenizer
from tts_engine.codec_stream import CodecStreamDecoder, decode_in_packets
from tts_engine.model.codec_decoder import load_codec_decoder

OFFICIAL = REPO_ROOT / "tests" / "support" / "parity" / "official_codec.py"
PARITY = 1e-4  # max abs difference allowed against the official waveform
LENGTHS = (1, 2, 37, 150, 300)


pytestmark = pytest.mark.usefixtures("single_torch_thread")


def make_cases(seed: int) -> dict[str, np.ndarray]:
    """Codes as the official decode takes them: [frames, 16] per case."""
    rng = np.random.default_rng(seed)
    cases = {f"random_{t}": rng.integers(0, 2048, (t, 16)) for t in LENGTHS}
    cases["loop_120"] = np.tile(rng.integers(0, 2048, (3, 16)), (40, 1))
    cases["extremes_90"] = rng.choice([0, 2047], size=(90, 16))
    return {k: v.astype(np.int64) for k, v in cases.items()}


@pytest.fixture(scope="module", params=["tiny", "mid"])
def official_run(
    request: pytest.FixtureRequest, parity_python: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, np.ndarray], Path]:
    root = tmp_path_factory.mktemp(f"codec_parity_{request.param}")
    checkpoint = write_speech_tokenizer(root / "model", request.param, seed=11)
    cases = make_cases(seed=5)
    np.savez(root / "codes.npz", **cases)
    out = root / "official"
    proc = subprocess.run(
        [str(parity_python), str(OFFICIAL), str(checkpoint), str(root / "codes.npz"), str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, f"official decode failed:\n{proc.stderr[-3000:]}"
    return checkpoint, cases, out


def test_official_loader_takes_our_checkpoint_whole(official_run: tuple[Path, dict, Path]) -> None:
    _, _, out = official_run
    info = json.loads((out / "load_info.json").read_text())
    assert info["missing_keys"] == [] and info["unexpected_keys"] == []
    assert info["mismatched_keys"] == [] and info["error_msgs"] == []
    assert info["feature_extractor"] == "EncodecFeatureExtractor" and info["sampling_rate"] == 24000


def test_offline_decode_matches_official(official_run: tuple[Path, dict, Path]) -> None:
    checkpoint, cases, out = official_run
    model = load_codec_decoder(checkpoint)
    for name, codes in cases.items():
        theirs = np.load(out / f"{name}.npy")
        with torch.no_grad():
            ours = model(torch.from_numpy(codes.T[None]))[0].numpy()
        assert ours.shape == theirs.shape == (codes.shape[0] * 1920,), name
        assert np.abs(theirs).max() > 0.05, f"{name}: official output is near silent"
        assert np.abs(ours - theirs).max() <= PARITY, (f"{name}: max abs diff "
                                                       f"{np.abs(ours - theirs).max():.2e}")


def test_incremental_decode_matches_official(official_run: tuple[Path, dict, Path]) -> None:
    checkpoint, cases, out = official_run
    stream = CodecStreamDecoder(load_codec_decoder(checkpoint))
    for name in ("random_150", "random_300", "loop_120"):
        codes = torch.from_numpy(cases[name].T[None])
        ours = decode_in_packets(stream, codes, 2)[0].numpy()
        theirs = np.load(out / f"{name}.npy")
        assert np.abs(ours - theirs).max() <= PARITY, (f"{name}: max abs diff "
                                                       f"{np.abs(ours - theirs).max():.2e}")
