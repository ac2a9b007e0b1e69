"""The talker parity cases, and both sides' greedy codes for them.

A parity set is a random checkpoint (preset, seed) and cases of prompt token ids
with a voice and a frame cap. The official side is the `qwen_tts` package,
driven by tests/support/parity/official_talker.py in its own Python (transformers
4.57.3, the parity venv); ours is `CodeGenerator.generate`, eager. Used by
tests/integration/test_talker_parity.py (float32 on CPU) and tools/gpu_parity.py (on a GPU
too, float32 and bfloat16).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from streamtalk_common.paths import cache_root
from tools.codes_eval import first_divergence
from tts_engine.checkpoint import load_talker, write_talker_files
from tts_engine.codegen import CodeGenerator
from tts_engine.prompt import build_prompt
from tts_engine.sampling import SamplingParams

OFFICIAL_TALKER = (Path(__file__).resolve().parents[1] / "tests" / "support" / "parity"
                   / "official_talker.py")
ROLE, SUFFIX = [151644, 77091, 198], [151645, 198, 151644, 77091, 198]
VOICES = [
    ("serena", "auto"), ("ryan", "english"), ("eric", "auto"), ("dylan", "chinese"),
    ("sohee", "korean"), ("ono_anna", "japanese"), ("uncle_fu", "auto"), ("aiden", "french"),
]
NUM_CODEBOOKS = 16

Case = dict[str, Any]  # {"ids": [...], "speaker", "language", "max_new_tokens"}
Codes = list[list[int]]  # [frames][16]


def default_parity_python() -> Path:
    """The python of the venv that runs the official implementation
    (scripts/setup_parity_venv.sh)."""
    return cache_root() / "parity-venv" / "bin" / "python"


def prompt_ids(n_text: int, rng: random.Random) -> list[int]:
    return ROLE + [rng.randrange(0, 151643) for _ in range(n_text)] + SUFFIX


def frame_cap(case: Case) -> int:
    """The official loop samples max_new_tokens tokens but completes a frame only for
    each token before the last: max_new_tokens - 1 frames at most."""
    return case["max_new_tokens"] - 1


@dataclass(frozen=True)
class ParitySet:
    name: str
    preset: str
    seed: int
    cases: list[Case]
    frames_per_text: float | None = None  # the tiny preset's shaped duration (None: its default)

    def write_checkpoint(self, model_dir: Path) -> None:
        write_talker_files(model_dir, self.preset, self.seed, self.frames_per_text)


def _cases(rng: random.Random, lengths: list[int],
           voices: list[tuple[str, str]], max_new_tokens: int) -> list[Case]:
    return [{"ids": prompt_ids(n, rng), "speaker": spk, "language": lang,
             "max_new_tokens": max_new_tokens}
            for n, (spk, lang) in zip(lengths, voices, strict=True)]


def tiny_set(seed: int) -> ParitySet:
    """Five voices on the shaped tiny weights, which end by EOS at a length that grows
    with the text."""
    rng = random.Random(seed)
    return ParitySet(f"tiny seed {seed}", "tiny", seed,
                     _cases(rng, [1, 3, 8, 15, 24], rng.sample(VOICES, 5), 120))


def mid_size_set() -> ParitySet:
    """A wider, deeper, unshaped geometry (hidden 256, 6 talker + 3 predictor layers)."""
    return ParitySet("custom:256,6,256,3", "custom:256,6,256,3", 7,
                     _cases(random.Random(7), [2, 9, 30], VOICES[:3], 41))


def full_size_set() -> ParitySet:
    """The 0.6B geometry, unshaped: three voices, 60 frames each
    (EOS rarely wins on random weights)."""
    return ParitySet("0.6b", "0.6b", 0, _cases(random.Random(0), [3, 12, 30], VOICES[:3], 61))


def boundary_set() -> ParitySet:
    """1-frame output, the max_new_tokens cap on a long text, and a 300-frame run."""
    rng = random.Random(3)
    cases = [{"ids": prompt_ids(5, rng), "speaker": "serena", "language": "auto",
              "max_new_tokens": 2},
             {"ids": prompt_ids(40, rng), "speaker": "ryan", "language": "english",
              "max_new_tokens": 9},
             {"ids": prompt_ids(12, rng), "speaker": "vivian", "language": "chinese",
              "max_new_tokens": 301}]
    return ParitySet("tiny boundary", "tiny", 3, cases, frames_per_text=40.0)


def eos_at_min_set() -> ParitySet:
    """EOS strongest from the first frame on: both sides stop after min_new_tokens (2) frames."""
    rng = random.Random(4)
    cases = [{"ids": prompt_ids(n, rng), "speaker": "aiden", "language": "english",
              "max_new_tokens": 50}
             for n in (1, 10)]
    return ParitySet("tiny eos at min_new_tokens", "tiny", 4, cases, frames_per_text=0.0)


# -- ours -------------------------------------------------------------------------


def load_ours(model_dir: Path, device: torch.device | str = "cpu",
              dtype: torch.dtype = torch.float32) -> CodeGenerator:
    model = load_talker(model_dir, device, dtype)
    return CodeGenerator(model.talker, model.config)


def generate_cases(gen: CodeGenerator, cases: list[Case]) -> list[Codes]:
    """Greedy codes of each case, frame for frame as the official generate gives them."""
    out = []
    for case in cases:
        prompt = build_prompt(gen.talker, gen.config, case["ids"], case["speaker"],
                              case["language"])
        codes, _ = gen.generate(prompt, SamplingParams(), frame_cap(case))
        out.append(codes.tolist())
    return out


def our_codes(model_dir: Path, cases: list[Case]) -> list[Codes]:
    """Ours, float32 on CPU."""
    return generate_cases(load_ours(model_dir), cases)


# -- official ---------------------------------------------------------------------


class OfficialRunError(RuntimeError):
    pass


class OfficialRun:
    """One official_talker.py process, started; its output goes to a temporary file (a pipe
    nobody reads while ours runs could fill and stall it)."""

    def __init__(self, argv: list[str], env: dict[str, str], what: str) -> None:
        self.what = what
        self._log = tempfile.TemporaryFile(mode="w+")
        self._proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT, text=True,
                                      env=env)

    def wait(self, timeout: float = 900) -> None:
        try:
            code = self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
            code = None
        self._log.seek(0)
        tail = self._log.read()[-3000:]
        self._log.close()
        if code is None:
            raise OfficialRunError(f"official run `{self.what}` took longer than "
                                   f"{timeout} s:\n{tail}")
        if code != 0:
            raise OfficialRunError(f"official run `{self.what}` failed (exit {code}):\n{tail}")


@dataclass(frozen=True)
class OfficialSide:
    """tests/support/parity/official_talker.py run by `python`, with `pythonpath` (may be empty)
    ahead of the inherited PYTHONPATH: on a host whose own transformers is newer, a
    folder holding transformers 4.57.3 and qwen-tts shadows it."""

    python: Path
    pythonpath: str = ""

    def start(self, *args: object) -> OfficialRun:
        env = dict(os.environ)
        if self.pythonpath:
            env["PYTHONPATH"] = os.pathsep.join(
                p for p in (self.pythonpath, env.get("PYTHONPATH", "")) if p)
        return OfficialRun([str(self.python), str(OFFICIAL_TALKER), *map(str, args)], env,
                           str(args[0]))

    def run(self, *args: object, timeout: float = 900) -> None:
        self.start(*args).wait(timeout)

    def start_codes(self, model_dir: Path, cases: list[Case], workdir: Path,
                    device: str = "cpu", dtype: str = "float32") -> Callable[[], list[Codes]]:
        """Start the official generate; the returned call waits for its codes."""
        workdir.mkdir(parents=True, exist_ok=True)
        cases_path, out_path = workdir / "cases.json", workdir / f"official_{device}_{dtype}.json"
        cases_path.write_text(json.dumps(cases))
        run = self.start("generate", model_dir, cases_path, out_path,
                         "--device", device, "--dtype", dtype)

        def result() -> list[Codes]:
            run.wait()
            return [r["codes"] for r in json.loads(out_path.read_text())]
        return result

    def codes(self, model_dir: Path, cases: list[Case], workdir: Path,
              device: str = "cpu", dtype: str = "float32") -> list[Codes]:
        return self.start_codes(model_dir, cases, workdir, device, dtype)()

    def start_environment(self, workdir: Path) -> Callable[[], dict[str, Any]]:
        """Start the official side's version report; the returned call waits for it."""
        out = workdir / "official_env.json"
        run = self.start("env", out)

        def result() -> dict[str, Any]:
            run.wait(300)
            return json.loads(out.read_text())
        return result


# -- comparison -------------------------------------------------------------------


def as_frames(codes: Codes) -> np.ndarray:
    return np.asarray(codes, dtype=np.int64).reshape(-1, NUM_CODEBOOKS)


def divergence(ours: Codes, official: Codes) -> dict[str, Any]:
    """tools.codes_eval.first_divergence with ours as `a` and the official codes as `b`."""
    return first_divergence(as_frames(ours), as_frames(official))
