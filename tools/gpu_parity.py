"""Parity with the official qwen-tts implementation on one device: greedy codes, case by case.

    python -m tools.gpu_parity [--out DIR] [--presets tiny,custom:256,6,256,3,0.6b]
        [--device auto|cuda|cpu] [--official-python PY] [--official-pythonpath DIRS]

Per preset, a random checkpoint and its parity cases (tools/talker_parity.py: the cases
of tests/integration/test_talker_parity.py; 0.6b: 3 cases of at most 60 frames), run by each side:

  official float32     the official package's generate, float32, TF32 off
  official bfloat16    the same in bfloat16
  eager float32        ours, CodeGenerator (dynamic KV cache, no graphs), float32, TF32 off
  eager bfloat16       the same in bfloat16
  engine bfloat16      ours as served: TTSEngine in its default (golden) configuration on
                       CUDA (bfloat16 talker and predictor, static KV rows, CUDA graphs) with
                       one row; each case alone on it, stepped by hand (bucket 1's graphs)

and compared (per case: frames of each side, the first frame where they part, the
codebooks that differ there):

  eager float32 vs official float32     must be identical
  eager bfloat16 vs official bfloat16   the dtype's effect alone
  engine bfloat16 vs official bfloat16  what a served stream gives
  eager bfloat16 vs engine bfloat16     what static caches and graphs change

`gap` explains a first divergence: ours' logit of its own pick minus its logit of the
other side's pick, there, in its (processed) scores; a gap at rounding size is a near tie
that rounding decided. Only the eager runs record logits. `rope_as_on_cpu` (per preset):
whether our rotary frequencies, computed on the device, equal the CPU's, from which the
official model's come.

The bfloat16 runs need CUDA; on a CPU they are skipped, with the reason in the JSON.
The official side is tests/support/parity/official_talker.py run by --official-python (default: the
parity venv's, scripts/setup_parity_venv.sh) with --official-pythonpath ahead of PYTHONPATH
(a folder holding transformers 4.57.3 and qwen-tts, on a host whose own transformers is newer).
Checkpoints live in a temporary folder. A table is printed and DIR/gpu_parity.json written
(rows, skipped comparisons, both sides' environments; default DIR:
${STREAMTALK_OUTPUT:-output}/gpu_parity). Exit status: 0 when every float32 case is
identical, 1 when one is not (or the official side fails), 2 on a bad argument.
"""

from __future__ import annotations

import argparse
import math
import platform
import shutil
import sys
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch

from streamtalk_common.paths import output_root
from streamtalk_common.tables import format_table, write_json
from tools.talker_parity import (
    Case,
    Codes,
    OfficialRunError,
    OfficialSide,
    ParitySet,
    default_parity_python,
    divergence,
    frame_cap,
    full_size_set,
    generate_cases,
    load_ours,
    mid_size_set,
    tiny_set,
)
from tts_engine.codec_checkpoint import write_speech_tokenizer
from tts_engine.codegen import CodeGenerator
from tts_engine.config import EngineConfig
from tts_engine.model.codec_decoder import float32_numerics
from tts_engine.model.layers import RotaryTable
from tts_engine.prompt import build_prompt
from tts_engine.runtime import TTSEngine
from tts_engine.runtime.stepper import RowStart
from tts_engine.sampling import SamplingParams, codebook0_logits_masked
from tts_engine.text_tokenizer import write_tokenizer_files

PARITY_SETS: dict[str, ParitySet] = {s.preset: s
                                     for s in (tiny_set(0), mid_size_set(), full_size_set())}
DEFAULT_PRESETS = ",".join(PARITY_SETS)
# (name, side a, side b): `gap` reads side a's logits
COMPARISONS = (
    ("eager float32 vs official float32", "eager float32", "official float32"),
    ("eager bfloat16 vs official bfloat16", "eager bfloat16", "official bfloat16"),
    ("engine bfloat16 vs official bfloat16", "engine bfloat16", "official bfloat16"),
    ("eager bfloat16 vs engine bfloat16", "eager bfloat16", "engine bfloat16"),
)
FLOAT32_COMPARISON = COMPARISONS[0][0]
BF16_SKIP_REASON = "the bfloat16 runs need a CUDA device; this run is on the CPU"


def parse_presets(text: str) -> list[ParitySet]:
    """'tiny,custom:256,6,256,3,0.6b' -> parity sets (a custom preset's own commas kept)."""
    parts, names = text.split(","), []
    while parts:
        name = parts.pop(0).strip()
        if name.startswith("custom:"):
            name = ",".join([name, *(p.strip() for p in parts[:3])])
            del parts[:3]
        if name not in PARITY_SETS:
            raise ValueError(f"unknown preset {name!r}; valid: {', '.join(PARITY_SETS)}")
        names.append(name)
    if not names:
        raise ValueError(f"no preset given; valid: {', '.join(PARITY_SETS)}")
    return [PARITY_SETS[n] for n in names]


# -- ours ---------------------------------------------------------------------


class LogitTape:
    """The raw logits of each head call, by forward hooks: codebook 0 from the talker's
    codec_head (the prefill's call is frame 0, each step's the next), codebook g from the
    predictor's lm_head[g-1], once per frame. Recorded only by eager runs."""

    def __init__(self, gen: CodeGenerator) -> None:
        heads = [gen.talker.codec_head, *gen.talker.code_predictor.lm_head]
        self.calls: list[list[torch.Tensor]] = [[] for _ in heads]
        self._hooks = [head.register_forward_hook(self._recorder(g))
                       for g, head in enumerate(heads)]

    def _recorder(self, codebook: int):
        def record(_module, _args, out: torch.Tensor) -> None:
            self.calls[codebook].append(out.detach().float().cpu())
        return record

    def take(self) -> list[list[torch.Tensor]]:
        calls, self.calls = self.calls, [[] for _ in self.calls]
        return calls

    def close(self) -> None:
        for hook in self._hooks:
            hook.remove()


def eager_codes(model_dir: Path, cases: list[Case], device: torch.device,
                dtype: torch.dtype) -> tuple[list[Codes], list[list[list[torch.Tensor]]],
                                             CodeGenerator]:
    """Ours eager, per case: (codes, the logits it chose from, the generator)."""
    gen = load_ours(model_dir, device, dtype)
    tape = LogitTape(gen)
    codes, logits = [], []
    try:
        for case in cases:
            codes += generate_cases(gen, [case])
            logits.append(tape.take())
    finally:
        tape.close()
    return codes, logits, gen


def engine_model_dir(parity_set: ParitySet, model_dir: Path) -> Path:
    """The parity set's talker files plus what the engine loads besides: the text tokenizer's
    files and a codec decoder. The decoder only turns codes into PCM, which is not compared:
    the tiny one keeps start-up short whatever the talker."""
    write_tokenizer_files(model_dir)
    write_speech_tokenizer(model_dir, "tiny", parity_set.seed)
    return model_dir


def engine_codes(engine: TTSEngine, cases: list[Case]) -> list[Codes]:
    """Each case alone on row 0 of the engine (its bucket-1 graphs on CUDA): the prompt
    prefilled, then one step per frame until EOS or the official generate's frame cap,
    with the greedy constants of a request that does not sample."""
    st, codegen = engine.stepper, engine.model.codegen
    min_new_tokens = SamplingParams().min_new_tokens
    out = []
    for i, case in enumerate(cases):
        with torch.no_grad():
            prompt = build_prompt(codegen.talker, codegen.config, case["ids"], case["speaker"],
                                  case["language"])
        start = RowStart(prompt, sampled=False, seed=0, min_new_tokens=min_new_tokens)
        cap = frame_cap(case)
        if start.start_position + cap > engine.pool.positions:
            raise ValueError(f"case {i}: a prompt of {start.start_position + 1} positions and "
                             f"{cap} frames do not fit a row of {engine.pool.positions} positions")
        st.prefill(0, [start])
        position, frames = start.start_position, []
        while len(frames) < cap:
            codes = st.step(1, [position], mixed=False).codes[0]
            position += 1
            if int(codes[0]) == codegen.eos_id:
                break
            frames.append(codes.tolist())
        out.append(frames)
    return out


# -- comparison ---------------------------------------------------------------


def logit_gap(gen: CodeGenerator, logits: list[list[torch.Tensor]], a: Codes, b: Codes,
              frame: int, codebook: int) -> float:
    """Side a's score of its pick minus its score of side b's pick at (frame, codebook); a
    side without that frame stopped there by EOS (codebook 0)."""

    def pick(codes: Codes) -> int:
        return codes[frame][codebook] if frame < len(codes) else gen.eos_id

    scores = logits[codebook][frame]  # [1, V]
    if codebook == 0:  # the processors greedy codebook 0 passes, over side a's history
        vocab = scores.shape[-1]
        seen = torch.zeros(1, vocab, dtype=torch.bool)
        seen[0, [f[0] for f in a[:frame]]] = True
        params = SamplingParams()
        scores = codebook0_logits_masked(scores, seen, torch.tensor([frame]),
                                         torch.tensor([params.min_new_tokens]),
                                         params.repetition_penalty, gen.suppress_mask.cpu(),
                                         gen.eos_id)
    return float(scores[0, pick(a)] - scores[0, pick(b)])


def compare(preset: str, name: str, a: list[Codes], b: list[Codes], cases: list[Case],
            gen: CodeGenerator | None, logits: list | None) -> list[dict[str, Any]]:
    rows = []
    for i, (ca, cb) in enumerate(zip(a, b, strict=True)):
        d = divergence(ca, cb)
        gap = None
        if d["first_frame"] is not None and logits is not None:
            codebook = d["codebooks"][0] if d["codebooks"] else 0
            gap = logit_gap(gen, logits[i], ca, cb, d["first_frame"], codebook)
        rows.append({
            "preset": preset, "comparison": name, "case": i,
            "voice": f"{cases[i]['speaker']}/{cases[i]['language']}", "frames_a": d["frames_a"],
            "frames_b": d["frames_b"], "first_frame": d["first_frame"], "codebooks": d["codebooks"],
            "codes_a": d["codes_a"], "codes_b": d["codes_b"],
            "differing_frames": d["differing_frames"],
            "gap": gap if gap is None or math.isfinite(gap) else str(gap),
        })
    return rows


# -- the run ------------------------------------------------------------------


def rope_as_on_cpu(gen: CodeGenerator) -> bool:
    """Whether our rotary frequencies, computed on the device, equal the CPU's: the official
    model computes them on the CPU and moves them (an ulp apart, they would part float32 runs
    slowly, over the positions)."""
    tables = [m for m in gen.talker.modules() if isinstance(m, RotaryTable)]
    return all(torch.equal(t.inv_freq.cpu(), RotaryTable(t.head_dim, t.theta).inv_freq)
               for t in tables)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: torch sees no CUDA device here (use --device cpu or auto)")
    return torch.device(name)


def resolve_python(python: str) -> Path:
    found = (shutil.which(python) if "/" not in python
             else (python if Path(python).exists() else None))
    if found is None:
        raise ValueError(f"--official-python {python}: not found (run scripts/setup_parity_venv.sh "
                         "for the parity venv, or name a python that imports qwen_tts and "
                         "transformers 4.57.3)")
    return Path(found)


def our_environment(device: torch.device) -> dict[str, Any]:
    try:
        transformers = version("transformers")
    except PackageNotFoundError:
        transformers = None
    return {"python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers,
            "cuda_device": torch.cuda.get_device_name(device) if device.type == "cuda" else None}


def run_set(parity_set: ParitySet, device: torch.device, official: OfficialSide,
            work: Path) -> dict[str, Any]:
    """The comparisons' rows of one parity set, and whether ours' rotary tables equal the CPU's."""
    model_dir = work / parity_set.preset.replace(":", "_").replace(",", "_")
    parity_set.write_checkpoint(model_dir)
    cases = parity_set.cases
    dtypes = ["float32"] + (["bfloat16"] if device.type == "cuda" else [])
    # the official runs go on in their own processes while ours run here
    official_runs = {dtype: official.start_codes(model_dir, cases, model_dir, device.type, dtype)
                     for dtype in dtypes}
    codes: dict[str, list[Codes]] = {}
    tapes: dict[str, tuple[CodeGenerator, list]] = {}
    with float32_numerics():  # TF32 off for matmuls and convolutions
        codes["eager float32"], logits, gen = eager_codes(model_dir, cases, device, torch.float32)
        tapes["eager float32"] = (gen, logits)
    rope_ok = rope_as_on_cpu(gen)
    if "bfloat16" in dtypes:
        codes["eager bfloat16"], logits, gen = eager_codes(model_dir, cases, device, torch.bfloat16)
        tapes["eager bfloat16"] = (gen, logits)
        config = EngineConfig(model_dir=str(engine_model_dir(parity_set, model_dir)),
                              device=device.type, max_batch=1)
        engine = TTSEngine(config)  # the config checked itself when built
        try:
            if not engine.stepper.graphed:
                raise RuntimeError(f"the engine steps eagerly ({engine.stepper.eager_reason}): "
                                   "no golden configuration")
            codes["engine bfloat16"] = engine_codes(engine, cases)
        finally:
            engine.close()
    for dtype, result in official_runs.items():
        codes[f"official {dtype}"] = result()
    rows = []
    for name, a, b in COMPARISONS:
        if a in codes and b in codes:
            gen, logits = tapes.get(a, (None, None))
            rows += compare(parity_set.preset, name, codes[a], codes[b], cases, gen, logits)
    return {"rows": rows, "rope_as_on_cpu": rope_ok}


def table_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"preset": r["preset"], "comparison": r["comparison"], "case": r["case"],
             "voice": r["voice"], "frames_a": r["frames_a"], "frames_b": r["frames_b"],
             "first_diff": r["first_frame"],
             "codebooks": ",".join(map(str, r["codebooks"][:4]))
                          + ("..." if len(r["codebooks"]) > 4 else "") or None,
             "gap": f"{r['gap']:.2e}" if isinstance(r["gap"], float) else r["gap"]} for r in rows]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tools.gpu_parity", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=output_root() / "gpu_parity",
                   help="folder for gpu_parity.json")
    p.add_argument("--presets", default=DEFAULT_PRESETS,
                   help=f"comma-separated, of: {DEFAULT_PRESETS}")
    p.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto",
                   help="auto: cuda when present")
    p.add_argument("--official-python", default=str(default_parity_python()),
                   help="python that runs the official side (default: the parity venv's)")
    p.add_argument("--official-pythonpath", default="",
                   help="folders put ahead of PYTHONPATH for the official side "
                        "(os.pathsep-separated)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        sets = parse_presets(args.presets)
        device = resolve_device(args.device)
        official = OfficialSide(resolve_python(args.official_python), args.official_pythonpath)
    except ValueError as exc:
        print(f"gpu_parity: {exc}", file=sys.stderr)
        return 2
    rows: list[dict[str, Any]] = []
    rope: dict[str, bool] = {}
    with tempfile.TemporaryDirectory(prefix="gpu_parity-") as tmp:
        work = Path(tmp)
        try:
            official_env = official.start_environment(work)
            for parity_set in sets:
                print(f"gpu_parity: {parity_set.name} on {device}", file=sys.stderr)
                result = run_set(parity_set, device, official, work)
                rows += result["rows"]
                rope[parity_set.preset] = result["rope_as_on_cpu"]
            official_env = official_env()
        except OfficialRunError as exc:
            print(f"gpu_parity: {exc}", file=sys.stderr)
            return 1
    skipped = [] if device.type == "cuda" else [
        {"comparison": name, "reason": BF16_SKIP_REASON} for name, *_ in COMPARISONS[1:]]
    float32_ok = all(r["first_frame"] is None for r in rows
                     if r["comparison"] == FLOAT32_COMPARISON)
    result = {
        "device": str(device), "presets": [s.preset for s in sets], "float32_identical": float32_ok,
        "settings": {
            "float32": "TF32 off on both sides (torch.backends.cuda.matmul.allow_tf32 = "
                       "torch.backends.cudnn.allow_tf32 = False)",
            "bfloat16": "torch defaults on both sides (bf16 matmuls may reduce in reduced "
                        "precision); the official model built under bfloat16 as the default dtype, "
                        "as from_pretrained builds it",
            "engine": "EngineConfig defaults (golden configuration) with max_batch=1; "
                      "each case alone on row 0",
            "frame_cap": "max_new_tokens - 1 frames, as the official generate gives at most",
        },
        "rope_as_on_cpu": rope,  # per preset: see rope_as_on_cpu
        "environment": {"ours": our_environment(device), "official": official_env},
        "rows": rows, "skipped": skipped,
    }
    write_json(args.out / "gpu_parity.json", result)
    print(format_table("parity with the official implementation "
                       f"on {device} (a = first side, b = second)",
                       table_rows(rows)))
    for s in skipped:
        print(f"skipped: {s['comparison']}: {s['reason']}")
    print(f"rotary tables as on the CPU: {rope}")
    print(f"float32 identical: {float32_ok}; wrote {args.out / 'gpu_parity.json'}")
    return 0 if float32_ok else 1


if __name__ == "__main__":
    sys.exit(main())
