"""TTS_COMPILE=1 on a CPU: the compiled engine's output, the compile cache across starts.

Each engine start runs in a fresh process (tests/support/engine_probe.py): dynamo's in-process
caches would hide what a start takes from the compile cache. Inductor compiles for the
CPU too (it needs a C++ compiler: scripts/install_system_deps.sh), and the tiny
checkpoint keeps a cold compile under a minute on two cores. The cache's artefacts file
and its retry, without compiling: unit/test_compile_cache.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from streamtalk_common.paths import REPO_ROOT
from tts_engine.config import EngineConfig
from tts_engine.errors import EngineStartError
from tts_engine.runtime import TTSEngine
from tts_engine.runtime.compile_cache import ARTEFACTS, CompileCache
from tts_engine.runtime.compiled import DYNAMIC_DIMS, STACK_DYNAMIC_DIMS

# 4 variants (batch 1 or more x one position or more) of each compiled part of a layer or
# a stack (the tiny checkpoint's talker and predictor share one geometry), one more of the
# RoPE table (in a batch, the predictor's positions are one row broadcast, the talker's
# one per row: two layouts), the decoder's activation for one row, and the decoder's layer
# step (batch 1 or more)
GRAPHS = 4 * (len(DYNAMIC_DIMS) + len(STACK_DYNAMIC_DIMS)) + 1 + 1 + 2


def start(model_dir: Path, home: Path, out: Path, compile_on: bool) -> dict:
    """One engine start in a fresh process (tests/support/engine_probe.py): what it wrote,
    and its log."""
    out.mkdir(parents=True)
    env = {**os.environ, "STREAMTALK_HOME": str(home), "TTS_COMPILE": str(int(compile_on)),
           "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    for variable in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR"):
        env.pop(variable, None)
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "tests" / "support" / "engine_probe.py"),
                           str(model_dir), str(out)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    streams = np.load(out / "streams.npz")
    return {"streams": {k: streams[k] for k in streams.files}, "log": proc.stderr,
            "startup": json.loads((out / "startup.json").read_text())}


def assert_same_streams(compiled: dict, eager: dict) -> None:
    """The same codes, and the same PCM within float32 rounding (the decoder's compiled
    activation rounds a few samples differently in the last bits)."""
    for key, want in eager["streams"].items():
        if key.startswith("codes"):
            np.testing.assert_array_equal(compiled["streams"][key], want, err_msg=key)
        else:
            np.testing.assert_allclose(compiled["streams"][key], want, rtol=0, atol=1e-5,
                                       err_msg=key)


def cache_dir(home: Path) -> Path:
    (folder,) = (home / "compile-cache").iterdir()
    return folder


@pytest.fixture(scope="module")
def eager(tiny_model_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("eager")
    return start(tiny_model_dir, tmp / "home", tmp / "out", compile_on=False)


@pytest.fixture(scope="module")
def cold(tiny_model_dir, tmp_path_factory):
    """The first compiled start in an empty cache root."""
    tmp = tmp_path_factory.mktemp("cold")
    return {**start(tiny_model_dir, tmp / "home", tmp / "out", compile_on=True),
            "home": tmp / "home"}


def test_compiled_engine_equals_eager(eager, cold):
    """At batch 1 and 2. Inductor's float32 kernels may round differently from eager ones
    in the last bits, which could flip a greedy choice at a near tie; on the tiny
    checkpoint they do not (assert_same_streams)."""
    assert_same_streams(cold, eager)
    assert eager["startup"]["compile"] is None and eager["startup"]["compile_s"] == 0


def test_every_bucket_shares_a_handful_of_graphs_compiled_at_start_up(cold):
    """Every batch size (1 and 2 here: warm-up, calibration, the streams) and path (prefill,
    decode step, predictor) runs the graphs of the compile phase: none is compiled after it."""
    startup = cold["startup"]
    assert startup["compile"]["graphs"] == GRAPHS
    assert startup["compile_s"] > 0
    assert "compiled after the compile phase" not in cold["log"]


def test_a_cold_start_compiles_and_saves_the_artefacts(cold):
    report = cold["startup"]["compile"]
    assert report["fx_graph_cache_misses"] == GRAPHS and report["fx_graph_cache_hits"] == 0
    assert not report["artefacts_loaded"] and report["artefacts_problem"] is None
    folder = cache_dir(cold["home"])
    assert report["dir"] == str(folder)
    assert (folder / ARTEFACTS).stat().st_size > 0 and (folder / "inductor").is_dir()
    assert json.loads((folder / "key.json").read_text())["device"].startswith("cpu")


def test_a_warm_start_compiles_from_the_artefacts_alone(tiny_model_dir, cold, eager, tmp_path):
    """The artefacts file is the portable copy: with only it in the key's folder (no
    inductor cache beside it), every graph comes from the cache."""
    home = tmp_path / "home"
    folder = home / "compile-cache" / cache_dir(cold["home"]).name
    folder.mkdir(parents=True)
    shutil.copy(cache_dir(cold["home"]) / ARTEFACTS, folder / ARTEFACTS)
    warm = start(tiny_model_dir, home, tmp_path / "out", compile_on=True)
    report = warm["startup"]["compile"]
    assert report["artefacts_loaded"] and report["artefacts_problem"] is None
    assert report["fx_graph_cache_hits"] == GRAPHS and report["fx_graph_cache_misses"] == 0
    assert_same_streams(warm, eager)


def test_corrupt_artefacts_are_replaced_with_a_warning(tiny_model_dir, cold, eager, tmp_path):
    home = tmp_path / "home"
    shutil.copytree(cold["home"] / "compile-cache", home / "compile-cache")
    artefacts = cache_dir(home) / ARTEFACTS
    data = bytearray(artefacts.read_bytes())
    data[-100:] = bytes(100)  # a damaged end: the payload no longer has its checksum
    artefacts.write_bytes(bytes(data))
    started = start(tiny_model_dir, home, tmp_path / "out", compile_on=True)
    report = started["startup"]["compile"]
    assert "truncated or altered" in report["artefacts_problem"] and not report["artefacts_loaded"]
    assert "WARNING compile cache: ignoring and removing" in started["log"]
    assert_same_streams(started, eager)
    fresh = CompileCache(cache_dir(home), json.loads((cache_dir(home) / "key.json").read_text()))
    fresh._verified_payload(artefacts.read_bytes())  # rewritten whole after the warm-up


def test_a_compile_that_fails_stops_the_start_with_the_way_out(tiny_model_dir, tmp_path,
                                                               monkeypatch):
    for variable in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR"):
        monkeypatch.delenv(variable, raising=False)  # restored afterwards: the engine points them
    monkeypatch.setenv("STREAMTALK_HOME", str(tmp_path))

    def no_compiler(*_args) -> None:
        raise RuntimeError("no working C++ compiler found")

    monkeypatch.setattr("tts_engine.runtime.engine.precompile", no_compiler)
    config = EngineConfig.from_env({}, model_dir=str(tiny_model_dir), device="cpu", max_batch=1,
                                   compile_steps="1")
    with pytest.raises(EngineStartError,
                       match="no working C\\+\\+ compiler found.*TTS_COMPILE=0 starts the engine"):
        TTSEngine(config)
