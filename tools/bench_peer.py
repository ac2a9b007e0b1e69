#!/usr/bin/env python3
"""Side-by-side benchmark of the peer faster-qwen3-tts 0.5.4 on our random checkpoint.

Runs faster-qwen3-tts (CUDA graphs over qwen-tts-hf 0.1.1.post1) on the same
Qwen3-TTS-12Hz CustomVoice checkpoint our engine benchmarks use, with the same
texts and frame counts as `python -m tts_engine bench e2e` (short 50, medium 210,
long 670 frames), speaker serena, English, bf16, sdpa:

    stream8, stream2   generate_custom_voice_streaming(chunk_size=8 / 2)
    nonstream          generate_custom_voice (whole utterance, then one decode)
    official           opt-in: the official qwen-tts path (HF generate, eager);
                       about 2 x real time on an H100, so give it short lengths

Each (mode, length) cell gets one warm-up run and then `--repeats` timed runs
(median reported, min and max kept in the JSON). Per run:

    TTFA      call -> first audio chunk yielded (torch.cuda.synchronize()d there);
              streaming modes only. It includes tokenization and prompt building.
    wall      call -> last chunk / return, synchronized
    audio     seconds of PCM returned (samples / sample rate)
    RTF       wall / audio (lower is better; faster-qwen3-tts's README uses the inverse)
    peak mem  torch.cuda max_memory_allocated / max_memory_reserved over the run

Frame counts. faster-qwen3-tts runs exactly `max_new_tokens` codec steps unless
the talker samples EOS (or the static cache of `max_seq_len` positions fills
up: prompt + frames must stay below it). The official path emits one frame fewer
than its `max_new_tokens` (the last sampled token never gets its residual
codebooks), so it is asked for frames + 1. EOS cannot win when row EOS (2150)
of `talker.codec_head.weight` is zero (the codec head has no bias): its logit is
then 0 against 2048 random code logits and it never reaches the top-k of 50.
`python -m tts_engine bench prepare DIR` writes such a checkpoint; this tool
also zeroes the row in memory (unless `--keep-eos`) and records whether it was
zero already. Every run checks the frames it got; a mismatch shows in the table.
`--force-length` also passes min_new_tokens = frames (EOS masked every step) to
the faster-qwen3-tts modes; the official path ignores min_new_tokens.

Compatibility patches (applied at run time, recorded in the JSON):
* qwen-tts-hf registers a RoPE "default" initializer that reads
  `config.rope_theta`; transformers >= 5.17's MimiConfig keeps it only in
  `config.rope_parameters["rope_theta"]`, so building the speech tokenizer fails
  with "'MimiConfig' object has no attribute 'rope_theta'". The registered
  function is wrapped to fall back to `rope_parameters` (numbers unchanged).
* qwen_tts imports torchaudio.compliance.kaldi at import time (25 Hz tokenizer
  only). If torchaudio cannot be imported, a stub that raises on use stands in.

Failures of the peer (load, a mode, a length) are caught: the JSON records the
traceback for that cell and the rest of the comparison still runs; the exit
status is 1 if anything failed. The JSON is rewritten after every cell.

On the GPU host (no network; Python 3.12, torch 2.11+cu130, transformers 5.x),
from the repo root with the .whl/ folder of scripts/fetch_gpu_wheels.sh:

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \\
        --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD
    python3 -m tts_engine bench prepare /tmp/bench-0.6b --preset 0.6b
    python3 tools/bench_peer.py --model-dir /tmp/bench-0.6b --out output/peer.json

About 6-7 minutes with the defaults on an H100 (5 repeats + warm-up, long cells
dominate); `--repeats 3` or `--lengths short medium` for less. Check on CPU
(argument parsing, texts, JSON and table; no model, no GPU):

    python3 tools/bench_peer.py --dry-run --out output/peer_dry.json
"""

from __future__ import annotations

import argparse
import importlib
import importlib.machinery
import json
import os
import platform
import statistics
import sys
import time
import traceback
import types
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODES = ["stream8", "stream2", "nonstream"]
OFFICIAL_EXTRA_STEPS = 1  # the official path emits max_new_tokens - 1 frames
SAMPLE_RATE = 24000
SAMPLES_PER_FRAME = 1920  # 12.5 frames per second
DTYPES = ("bfloat16", "float16", "float32")


def progress(msg: str) -> None:
    print(f"[bench_peer {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def error_record(stage: str, exc: BaseException) -> dict[str, str]:
    return {
        "stage": stage,
        "error": f"{type(exc).__name__}: {exc}",
        "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
    }


# -- modes and arguments ----------------------------------------------------------


def parse_mode(text: str) -> str:
    """stream<N> (N >= 1 codec frames per chunk), nonstream or official."""
    if text in ("nonstream", "official"):
        return text
    if text.startswith("stream") and text[6:].isdigit() and int(text[6:]) >= 1:
        return f"stream{int(text[6:])}"
    raise argparse.ArgumentTypeError(f"unknown mode {text!r}; valid: stream<N> (e.g. stream8), "
                                     "nonstream, official")


def chunk_size(mode: str) -> int | None:
    return int(mode[6:]) if mode.startswith("stream") else None


def build_parser(lengths: list[str]) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bench_peer.py", description=__doc__.split("\n\n", 1)[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Usage notes, measurement definitions and the compatibility patches: "
               "see the module docstring.")
    p.add_argument("--model-dir",
                   help="Qwen3-TTS-12Hz CustomVoice checkpoint dir (official layout)")
    p.add_argument("--out", default="output/bench_peer.json",
                   help="JSON output path (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=5,
                   help="timed runs per cell after one warm-up (default: 5)")
    p.add_argument("--modes", nargs="+", type=parse_mode, default=list(DEFAULT_MODES),
                   help="stream<N>, nonstream, official (default: %(default)s)")
    p.add_argument("--lengths", nargs="+", choices=lengths, default=list(lengths),
                   help="utterance lengths (default: all)")
    p.add_argument("--speaker", default="serena")
    p.add_argument("--language", default="English")
    p.add_argument("--device", default="cuda", help="cuda or cuda:N; cpu only for --modes official")
    p.add_argument("--dtype", default="bfloat16", choices=DTYPES)
    p.add_argument("--attn", default="sdpa", help="attn_implementation (default: sdpa)")
    p.add_argument("--max-seq-len", type=int, default=2048,
                   help="faster-qwen3-tts static cache (default: 2048)")
    p.add_argument("--seed", type=int, default=0,
                   help="torch.manual_seed(seed + run index) before each run")
    p.add_argument("--keep-eos", action="store_true",
                   help="do not zero the EOS row of codec_head in memory")
    p.add_argument("--force-length", action="store_true",
                   help="faster-qwen3-tts modes: also pass min_new_tokens = frames (mask EOS)")
    p.add_argument("--dry-run", action="store_true",
                   help="no model, no GPU: a stand-in peer exercises the loop, JSON and table")
    return p


# -- compatibility patches --------------------------------------------------------


def ensure_torchaudio_kaldi() -> str:
    """Import torchaudio.compliance.kaldi, or put a stub that raises on use in its place."""
    try:
        import torchaudio
        import torchaudio.compliance.kaldi  # noqa: F401

        return f"torchaudio {torchaudio.__version__}"
    except Exception as exc:  # ImportError, OSError (ABI), RuntimeError (CUDA version check)
        reason = f"{type(exc).__name__}: {exc}"
    for name in [n for n in sys.modules if n == "torchaudio" or n.startswith("torchaudio.")]:
        del sys.modules[name]

    def unavailable(name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        raise RuntimeError(f"torchaudio is a stub in bench_peer ({reason}); "
                           f"torchaudio.compliance.kaldi.{name} is only used by the 25 Hz "
                           "tokenizer, not by the 12 Hz custom-voice path")

    parent = None
    for name in ("torchaudio", "torchaudio.compliance", "torchaudio.compliance.kaldi"):
        mod = types.ModuleType(name)
        mod.__spec__ = importlib.machinery.ModuleSpec(name, None,
                                                      is_package=not name.endswith("kaldi"))
        if name.endswith("kaldi"):
            mod.__getattr__ = unavailable  # type: ignore[method-assign]
        else:
            mod.__path__ = []
        sys.modules[name] = mod
        if parent is not None:
            setattr(parent, name.rsplit(".", 1)[1], mod)
        parent = mod
    return f"stub ({reason})"


class _ThetaView:
    """A config seen with rope_theta (and partial_rotary_factor) taken from rope_parameters."""

    def __init__(self, config: Any, params: dict[str, Any]) -> None:
        self._config = config
        self.rope_theta = params["rope_theta"]
        if "partial_rotary_factor" in params \
                and getattr(config, "partial_rotary_factor", None) is None:
            self.partial_rotary_factor = params["partial_rotary_factor"]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._config, name)


def _rope_params(config: Any, layer_type: str | None) -> dict[str, Any] | None:
    params = getattr(config, "rope_parameters", None)
    if not isinstance(params, dict):
        return None
    if "rope_theta" in params:
        return params
    nested = [params.get(layer_type)] if layer_type else []
    nested += [v for v in params.values() if isinstance(v, dict)]
    return next((v for v in nested if isinstance(v, dict) and "rope_theta" in v), None)


def install_rope_theta_fallback() -> dict[str, Any]:
    """Wrap qwen-tts-hf's RoPE "default" initializer so configs without rope_theta work.

    Must run after `import qwen_tts` (which registers the initializer) and before
    any model is built. A config that has rope_theta takes the original path
    unchanged; only the others (transformers >= 5.17 MimiConfig) use the fallback.
    """
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    state: dict[str, Any] = {"installed": False, "fallback_calls": 0}
    original = ROPE_INIT_FUNCTIONS.get("default")
    if original is None:
        state["reason"] = "no 'default' RoPE initializer registered"
        return state
    if getattr(original, "_bench_peer_fallback", False):
        state.update(installed=True, reason="already installed")
        return state
    if not getattr(original, "__module__", "").startswith("qwen_tts"):
        state["reason"] = ("'default' initializer comes from "
                           f"{getattr(original, '__module__', '?')}, left alone")
        return state

    def default_rope_with_fallback(config: Any, device: Any = None,
                                   *args: Any, **kwargs: Any) -> Any:
        try:
            config.rope_theta  # noqa: B018 - the attribute probe is the point
        except AttributeError:
            params = _rope_params(config, kwargs.get("layer_type"))
            if params is None:
                raise
            state["fallback_calls"] += 1
            config = _ThetaView(config, params)
        return original(config, device, *args, **kwargs)

    default_rope_with_fallback._bench_peer_fallback = True  # type: ignore[attr-defined]
    ROPE_INIT_FUNCTIONS["default"] = default_rope_with_fallback
    compat = sys.modules.get("qwen_tts._transformers_compat")
    if compat is not None and getattr(compat, "_default_rope_parameters", None) is original:
        compat._default_rope_parameters = default_rope_with_fallback
    state.update(installed=True, reason=f"wrapped {original.__module__}.{original.__name__}")
    return state


# -- peers ------------------------------------------------------------------------


class DryRunPeer:
    """Stand-in with the peer's call shapes: zeros of the right length, no model."""

    name = "dry-run"
    sample_rate = SAMPLE_RATE

    def stream(self, text: str, frames: int, chunk: int):
        import numpy as np

        done = 0
        while done < frames:
            n = min(chunk, frames - done)
            done += n
            yield (np.zeros(n * SAMPLES_PER_FRAME, dtype=np.float32), SAMPLE_RATE,
                   {"chunk_steps": n, "prefill_ms": 0.0})

    def full(self, text: str, frames: int) -> tuple[list, int, dict]:
        import numpy as np

        return ([np.zeros(frames * SAMPLES_PER_FRAME, dtype=np.float32)], SAMPLE_RATE,
                {"steps": frames})

    def official(self, text: str, frames: int) -> tuple[list, int, dict]:
        return self.full(text, frames)


class FasterPeer:
    """faster-qwen3-tts (or, for official-only runs, just the qwen-tts model it wraps)."""

    name = "faster-qwen3-tts"

    def __init__(self, args: argparse.Namespace, setup: dict[str, Any]) -> None:
        import torch

        self.args = args
        self.speaker, self.language = args.speaker, args.language
        dtype = getattr(torch, args.dtype)
        setup["torchaudio"] = ensure_torchaudio_kaldi()
        import qwen_tts

        # its call count updates in place
        setup["rope_theta_fallback"] = install_rope_theta_fallback()
        self._fast_timings: list[dict] = []
        start = time.perf_counter()
        if any(m != "official" for m in args.modes):
            from faster_qwen3_tts import FasterQwen3TTS

            self.tts = FasterQwen3TTS.from_pretrained(
                args.model_dir, device=args.device, dtype=dtype,
                attn_implementation=args.attn, max_seq_len=args.max_seq_len)
            self.base = self.tts.model
            self._wrap_fast_generate()
        else:
            self.tts = None
            self.base = qwen_tts.Qwen3TTSModel.from_pretrained(
                args.model_dir, device_map=args.device, dtype=dtype, attn_implementation=args.attn)
        setup["load_s"] = time.perf_counter() - start
        self.sample_rate = int(getattr(self.base.model.speech_tokenizer, "sample_rate", SAMPLE_RATE)
                               or SAMPLE_RATE)
        setup["sample_rate"] = self.sample_rate
        setup["eos"] = self._zero_eos_row(keep=args.keep_eos)
        speakers = self.base.get_supported_speakers()
        setup["speakers"] = speakers
        if speakers is not None and self.speaker.lower() not in speakers:
            raise ValueError(f"speaker {self.speaker!r} is not in this checkpoint; valid: "
                             f"{', '.join(speakers)}")

    def _wrap_fast_generate(self) -> None:
        """Record the step count of each non-streaming call (its return value carries none)."""
        import faster_qwen3_tts.generate as fg

        original = fg.fast_generate
        if getattr(original, "_bench_peer_wrapped", False):
            return

        def fast_generate(*args: Any, **kwargs: Any) -> Any:
            codes, timing = original(*args, **kwargs)
            self._fast_timings.append(dict(timing))
            return codes, timing

        fast_generate._bench_peer_wrapped = True  # type: ignore[attr-defined]
        fg.fast_generate = fast_generate  # generate_custom_voice imports it at call time

    def _zero_eos_row(self, keep: bool) -> dict[str, Any]:
        import torch

        model = self.base.model
        eos = int(model.config.talker_config.codec_eos_token_id)
        head = model.talker.codec_head
        was_zero = bool((head.weight[eos] == 0).all())
        bias = getattr(head, "bias", None)
        if bias is not None:
            was_zero = was_zero and bool(bias[eos] == 0)
        if not keep and not was_zero:
            with torch.no_grad():
                head.weight[eos].zero_()
                if bias is not None:
                    bias[eos].zero_()
        return {"id": eos, "row_was_zero": was_zero, "zeroed_in_memory": not keep and not was_zero,
                "codec_head_has_bias": bias is not None}

    def _length_kwargs(self, frames: int) -> dict[str, int]:
        kw = {"max_new_tokens": frames}
        if self.args.force_length:
            kw["min_new_tokens"] = frames
        return kw

    def stream(self, text: str, frames: int, chunk: int):
        return self.tts.generate_custom_voice_streaming(
            text=text, speaker=self.speaker, language=self.language, chunk_size=chunk,
            **self._length_kwargs(frames))

    def full(self, text: str, frames: int) -> tuple[list, int, dict]:
        self._fast_timings.clear()
        wavs, sr = self.tts.generate_custom_voice(
            text=text, speaker=self.speaker, language=self.language, **self._length_kwargs(frames))
        timing = self._fast_timings[-1] if self._fast_timings else {}
        return wavs, sr, timing

    def official(self, text: str, frames: int) -> tuple[list, int, dict]:
        # Its generate() fixes min_new_tokens at 2 (a passed value
        # is dropped): only the zeroed EOS row holds the length.
        wavs, sr = self.base.generate_custom_voice(text=text, speaker=self.speaker,
                                                   language=self.language,
                                                   max_new_tokens=frames + OFFICIAL_EXTRA_STEPS)
        return wavs, sr, {}


# -- measurement ------------------------------------------------------------------


class Clock:
    """perf_counter after a CUDA synchronize (when CUDA is in use), and peak-memory bookkeeping."""

    def __init__(self, cuda: bool) -> None:
        self.cuda = cuda

    def now(self) -> float:
        if self.cuda:
            import torch

            torch.cuda.synchronize()
        return time.perf_counter()

    def reset_peak(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()

    def peak(self) -> dict[str, float | None]:
        if not self.cuda:
            return {"peak_alloc_gib": None, "peak_reserved_gib": None}
        import torch

        return {"peak_alloc_gib": torch.cuda.max_memory_allocated() / 2**30,
                "peak_reserved_gib": torch.cuda.max_memory_reserved() / 2**30}


def _samples(audio: Any) -> int:
    size = getattr(audio, "size", None)
    if isinstance(size, int):
        return size
    return int(audio.numel()) if hasattr(audio, "numel") else len(audio)


def run_once(peer: Any, mode: str, text: str, frames: int, clock: Clock) -> dict[str, Any]:
    clock.reset_peak()
    t0 = clock.now()
    chunk = chunk_size(mode)
    rec: dict[str, Any] = {"ttfa_ms": None}
    if chunk is not None:
        first = last = None
        gaps: list[float] = []
        samples = steps = chunks = 0
        sr = peer.sample_rate
        for audio, chunk_sr, timing in peer.stream(text, frames, chunk):
            now = clock.now()
            sr = chunk_sr
            if first is None:
                first = now
                rec["first_chunk_prefill_ms"] = timing.get("prefill_ms")
            else:
                gaps.append(now - last)
            last = now
            samples += _samples(audio)
            steps += int(timing.get("chunk_steps", 0))
            chunks += 1
        end = clock.now()
        rec.update(ttfa_ms=None if first is None else (first - t0) * 1000, chunks=chunks,
                   max_gap_ms=max(gaps) * 1000 if gaps else None, frames=steps)
    else:
        call = peer.official if mode == "official" else peer.full
        wavs, sr, timing = call(text, frames)
        end = clock.now()
        samples = sum(_samples(w) for w in wavs)
        rec["frames"] = (int(timing["steps"]) if "steps" in timing
                         else round(samples / SAMPLES_PER_FRAME))
        if "ms_per_step" in timing:
            rec["ms_per_step"] = float(timing["ms_per_step"])
            rec["prefill_ms"] = float(timing.get("prefill_ms", 0.0))
    wall = end - t0
    audio_s = samples / float(sr)
    rec.update(wall_s=wall, audio_s=audio_s, rtf=wall / audio_s if audio_s > 0 else None,
               samples=samples, sample_rate=int(sr), **clock.peak())
    return rec


def _median(runs: list[dict], key: str) -> float | None:
    values = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(values) if values else None


def summarize(runs: list[dict], frames: int) -> dict[str, Any]:
    summary: dict[str, Any] = {k: _median(runs, k) for k in
                               ("ttfa_ms", "wall_s", "audio_s", "rtf", "max_gap_ms", "ms_per_step")}
    for key in ("ttfa_ms", "wall_s", "rtf"):
        values = [r[key] for r in runs if r.get(key) is not None]
        summary[f"{key}_min"] = min(values) if values else None
        summary[f"{key}_max"] = max(values) if values else None
    for key in ("peak_alloc_gib", "peak_reserved_gib"):
        values = [r[key] for r in runs if r.get(key) is not None]
        summary[key] = max(values) if values else None
    got = sorted({r.get("frames") for r in runs})
    summary["frames"] = got[0] if len(got) == 1 else got
    summary["frames_ok"] = got == [frames]
    return summary


def run_cell(peer: Any, mode: str, length: str, text: str, frames: int, repeats: int,
             clock: Clock, seed: int) -> dict[str, Any]:
    cell: dict[str, Any] = {"mode": mode, "length": length, "frames_expected": frames,
                            "status": "ok", "runs": []}
    try:
        import torch

        for i in range(repeats + 1):
            torch.manual_seed(seed + i)
            rec = run_once(peer, mode, text, frames, clock)
            label = "warm-up" if i == 0 else f"run {i}/{repeats}"
            ttfa = "" if rec["ttfa_ms"] is None else f"TTFA {rec['ttfa_ms']:.1f} ms, "
            rtf = "-" if rec["rtf"] is None else f"{rec['rtf']:.3f}"
            progress(f"{mode} {length} {label}: {ttfa}wall {rec['wall_s']:.3f} s, "
                     f"audio {rec['audio_s']:.2f} s, RTF {rtf}, frames {rec['frames']}")
            if i == 0:
                cell["warmup"] = rec
            else:
                cell["runs"].append(rec)
        cell["median"] = summarize(cell["runs"], frames)
    except Exception as exc:
        cell.update(status="error", **error_record(f"{mode} {length}", exc))
        if cell["runs"]:
            cell["median"] = summarize(cell["runs"], frames)
        progress(f"{mode} {length} FAILED: {cell['error']}")
    return cell


# -- report -----------------------------------------------------------------------


def environment(cuda: bool) -> dict[str, Any]:
    from importlib import metadata

    env: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform(),
                           "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    for dist in ("torch", "transformers", "faster-qwen3-tts", "qwen-tts-hf", "accelerate", "numpy",
                 "torchaudio", "librosa", "soundfile"):
        try:
            env[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            env[dist] = None
    if cuda:
        import torch

        env["gpu"] = torch.cuda.get_device_name(torch.cuda.current_device())
        env["cuda"] = torch.version.cuda
    return env


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def table(report: dict[str, Any]) -> str:
    head = ["mode", "length", "frames", "TTFA ms", "wall s", "audio s", "RTF", "alloc GiB",
            "resv GiB", "status"]
    rows = []
    for cell in report["cells"]:
        m = cell.get("median") or {}
        status = (cell["status"] if cell["status"] != "error"
                  else f"FAILED {cell.get('error', '')}"[:70])
        if m and not m.get("frames_ok", True):
            status += f" (frames {m.get('frames')} != {cell['frames_expected']})"
        frames = m.get("frames", cell["frames_expected"]) if m else cell["frames_expected"]
        rows.append([cell["mode"], cell["length"], str(frames), _fmt(m.get("ttfa_ms"), ".1f"),
                     _fmt(m.get("wall_s"), ".3f"), _fmt(m.get("audio_s"), ".2f"),
                     _fmt(m.get("rtf"), ".3f"), _fmt(m.get("peak_alloc_gib"), ".2f"),
                     _fmt(m.get("peak_reserved_gib"), ".2f"), status])
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(head)]
    env = report["environment"]
    title = (f"{report['peer']} ({env.get('faster-qwen3-tts') or '-'}, qwen-tts-hf "
             f"{env.get('qwen-tts-hf') or '-'}) on {env.get('gpu') or 'no GPU'}; "
             f"medians of {report['settings']['repeats']} runs after warm-up; RTF = wall / audio")
    lines = [title, "  ".join(h.ljust(w) for h, w in zip(head, widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    for err in report["errors"]:
        lines.append(f"setup error ({err['stage']}): {err['error']}")
    return "\n".join(lines)


def write_json(path: Path, report: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=2, default=str) + "\n")
    tmp.replace(path)


# -- main -------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    # Before anything imports huggingface_hub: the GPU
    # host has no network and the model dir is local.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))  # run as a file: make tts_engine importable
    from tts_engine.bench import LENGTHS, TEXTS  # the texts and frame counts of our own e2e bench

    args = build_parser(list(LENGTHS)).parse_args(argv)
    if args.repeats < 1:
        raise SystemExit("--repeats must be >= 1")
    if not args.dry_run:
        if not args.model_dir:
            raise SystemExit("--model-dir is required (or --dry-run)")
        from tts_engine.checkpoint import CheckpointError, check_model_dir

        try:
            check_model_dir(args.model_dir)
        except CheckpointError as exc:
            raise SystemExit(str(exc)) from None
        if not args.device.startswith("cuda") and any(m != "official" for m in args.modes):
            raise SystemExit(f"faster-qwen3-tts needs CUDA (--device {args.device!r}); "
                             "only --modes official runs on CPU")
    # Official mode last: its eager HF generate must not sit between the graphed runs.
    modes = list(dict.fromkeys(m for m in args.modes if m != "official"))
    modes += ["official"] if "official" in args.modes else []
    args.modes = modes
    args.lengths = list(dict.fromkeys(args.lengths))

    import torch

    cuda = not args.dry_run and args.device.startswith("cuda") and torch.cuda.is_available()
    if cuda and torch.device(args.device).index is not None:
        # "cuda" alone keeps the current device
        torch.cuda.set_device(torch.device(args.device).index)
    out = Path(args.out)
    report: dict[str, Any] = {
        "tool": "tools/bench_peer.py",
        "peer": "dry-run stand-in" if args.dry_run else "faster-qwen3-tts",
        "complete": False,
        "settings": {
            "model_dir": args.model_dir, "modes": modes, "lengths": args.lengths,
            "repeats": args.repeats, "speaker": args.speaker, "language": args.language,
            "device": args.device, "dtype": args.dtype, "attn_implementation": args.attn,
            "max_seq_len": args.max_seq_len, "seed": args.seed, "keep_eos": args.keep_eos,
            "force_length": args.force_length, "dry_run": args.dry_run,
            "sampling": "peer defaults: do_sample, temperature 0.9, top_k 50, top_p 1.0, "
                        "repetition_penalty 1.05; non_streaming_mode default (True: whole text in "
                        "the prefill)",
            "texts": {k: TEXTS[k] for k in args.lengths},
            "frames": {k: LENGTHS[k] for k in args.lengths},
        },
        "environment": environment(cuda),
        "setup": {},
        "errors": [],
        "cells": [],
    }
    peer: Any = None
    if args.dry_run:
        peer = DryRunPeer()
    else:
        progress(f"loading {args.model_dir} ({args.dtype}, {args.attn}) for modes "
                 f"{' '.join(modes)}")
        try:
            peer = FasterPeer(args, report["setup"])
            if cuda:
                report["setup"]["memory_after_load_gib"] = torch.cuda.memory_allocated() / 2**30
            progress(f"loaded in {report['setup']['load_s']:.1f} s; torchaudio: "
                     f"{report['setup']['torchaudio']}; RoPE fallback: "
                     f"{report['setup']['rope_theta_fallback']}; EOS: {report['setup']['eos']}")
        except Exception as exc:
            report["errors"].append(error_record("load", exc))
            progress("load FAILED: "
                     f"{report['errors'][-1]['error']}\n{report['errors'][-1]['traceback']}")
    clock = Clock(cuda)
    for mode in modes:
        for length in args.lengths:
            if peer is None:
                report["cells"].append({"mode": mode, "length": length,
                                        "frames_expected": LENGTHS[length],
                                        "status": "skipped (load failed)"})
                continue
            report["cells"].append(run_cell(peer, mode, length, TEXTS[length], LENGTHS[length],
                                            args.repeats, clock, args.seed))
            write_json(out, report)  # after every cell: a killed run still leaves its results
    report["complete"] = True
    failed = bool(report["errors"]) or any(c["status"] != "ok" for c in report["cells"])
    report["failed"] = failed
    write_json(out, report)
    progress(f"wrote {out}")
    print(table(report), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
