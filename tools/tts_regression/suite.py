"""Run the TTS regression cases through the engine and evaluate the six gates."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from streamtalk_common.audio import SAMPLE_RATE, from_pcm16, read_wav, to_pcm16, write_wav
from streamtalk_common.paths import REPO_ROOT, cache_root, output_root
from streamtalk_common.stats import percentile

from . import metrics as M

HERE = Path(__file__).resolve().parent
CASES_PATH = HERE / "cases.json"
PROFILES_PATH = HERE / "profiles.json"
CPU_BASELINE = REPO_ROOT / "golden" / "tts"
RUNS_PER_MODE = {"fast": 3, "full": 10}
TTFA_PERCENTILE = "nearest_rank"  # a measured TTFA, never one between two requests
GATES = ["determinism", "abs_duration_diff_ms", "repeat", "SNR_vs_baseline", "TTFA",
         "stream_bad_audio"]


class RegressionError(RuntimeError):
    """The suite cannot run (bad arguments, missing files)."""


def load_cases(path: Path = CASES_PATH, only: list[str] | None = None) -> list[dict]:
    cases = json.loads(path.read_text(encoding="utf-8"))["cases"]
    if only:
        known = {c["id"] for c in cases}
        unknown = [c for c in only if c not in known]
        if unknown:
            raise RegressionError(f"unknown case id(s) {unknown}; valid: {sorted(known)}")
        cases = [c for c in cases if c["id"] in only]
    return cases


def load_profiles(path: Path = PROFILES_PATH) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def thresholds_for(profile: str, profiles: dict | None = None) -> dict:
    profiles = profiles or load_profiles()
    if profile not in profiles["profiles"]:
        raise RegressionError(f"unknown profile {profile!r}; valid: {sorted(profiles['profiles'])}")
    merged = dict(profiles["common"])
    merged.update({k: v for k, v in profiles["profiles"][profile].items()
                   if k not in ("calibration", "description", "device")})
    return merged


def profile_device(profile: str, profiles: dict | None = None) -> str:
    """The device a profile runs the engine on; everything else comes from EngineConfig."""
    profiles = profiles or load_profiles()
    if profile not in profiles["profiles"]:
        raise RegressionError(f"unknown profile {profile!r}; valid: {sorted(profiles['profiles'])}")
    return profiles["profiles"][profile]["device"]


def baseline_dir_for(engine_info: dict) -> Path:
    """golden/tts on a CPU; golden/tts/gpu-<card> on a GPU (NVIDIA H200 -> gpu-h200): float
    rounding differs between devices and cards, so each keeps its own audio."""
    if engine_info["device"] == "cpu":
        return CPU_BASELINE
    card = re.sub(r"^nvidia\s+", "", engine_info["card"].strip(), flags=re.IGNORECASE)
    return CPU_BASELINE / ("gpu-" + re.sub(r"[^a-z0-9]+", "-", card.lower()).strip("-"))


def read_baseline_wav(path: Path) -> np.ndarray:
    try:
        return read_wav(path)[0]
    except ValueError as exc:
        raise RegressionError(str(exc)) from None


@dataclass
class CaseResult:
    case: dict
    hashes: list[str] = field(default_factory=list)
    ttfa_ms: list[float] = field(default_factory=list)
    wall_ms: list[float] = field(default_factory=list)
    stream_pcm: np.ndarray | None = None
    offline_pcm: np.ndarray | None = None
    codes0: list[int] = field(default_factory=list)
    packet_frames: list[int] = field(default_factory=list)
    frames: int = 0
    stop_reason: str = ""
    offline_stop_reason: str = ""
    error: str | None = None


def open_engine(model_dir: str | None, device: str = "cpu"):
    """The engine as EngineConfig configures it (TTS_* variables, golden defaults: graphs on
    CUDA), on the profile's device."""
    from tts_engine.checkpoint import ensure_checkpoint
    from tts_engine.config import ConfigValueError, EngineConfig
    from tts_engine.runtime import TTSEngine

    if model_dir is None:
        model_dir = str(ensure_checkpoint(cache_root() / "checkpoints" / "tiny", "tiny", seed=0))
    if not Path(model_dir).is_dir():
        raise RegressionError(f"model directory {model_dir} does not exist")
    try:
        return TTSEngine(EngineConfig.from_env(model_dir=str(model_dir), device=device,
                                               packet_metrics=1))
    except ConfigValueError as exc:  # a device this machine lacks, a bad TTS_* value
        raise RegressionError(f"{exc} (the profile runs on {device})") from None


def engine_info(engine) -> dict:
    """The configuration the cases ran under, as the report and the baseline name it."""
    import torch

    cfg = engine.config
    device = cfg.torch_device
    card = (torch.cuda.get_device_name(device) if device.type == "cuda"
            else platform.processor() or platform.machine())
    return {"device": device.type, "card": card,
            "dtype": str(cfg.torch_dtype).removeprefix("torch."),
            "decoder_dtype": cfg.decoder_dtype, "cuda_graphs": bool(engine.stepper.use_graphs),
            "compile_steps": int(cfg.compiled), "batch_invariant": cfg.batch_invariant,
            "decode_mode": cfg.decode_mode, "torch_threads": _torch_threads()}


def run_cases(engine, cases: list[dict], runs: int, log=print) -> list[CaseResult]:
    results = []
    for case in cases:
        r = CaseResult(case=case)
        try:
            req = engine.make_request(case["text"], case["speaker"], case["language"])
            for i in range(runs):
                t0 = time.perf_counter()
                pcm, m = engine.synthesize_blocking(req)
                r.wall_ms.append((time.perf_counter() - t0) * 1000)
                r.hashes.append(M.pcm_sha256(pcm))
                if m.ttfa_ms is not None:
                    r.ttfa_ms.append(float(m.ttfa_ms))
                if i == 0:
                    r.stream_pcm = np.asarray(pcm, dtype=np.float32)
                    r.packet_frames = [int(p["frames"]) for p in m.packet_log]
                    r.frames = int(m.frames)
                    r.stop_reason = m.stop_reason
            codes, reason = engine.model.generate_codes(req)
            r.offline_stop_reason = reason
            r.codes0 = [int(x) for x in codes[:, 0].tolist()]
            r.offline_pcm = np.asarray(engine.model.decode(codes), dtype=np.float32)
        except Exception as exc:  # noqa: BLE001 - a crashing case is a gate failure, reported per case
            r.error = f"{type(exc).__name__}: {exc}"
        log(f"  {case['id']}: runs={len(r.hashes)} unique={len(set(r.hashes))} "
            f"ttfa={[round(t) for t in r.ttfa_ms]} frames={r.frames} stop={r.stop_reason}"
            + (f" ERROR {r.error}" if r.error else ""))
        results.append(r)
    return results


def load_baseline(baseline_dir: Path) -> dict:
    meta_path = baseline_dir / "baseline.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"baseline missing: {meta_path} not found; create it with "
                                "--mode full --update-baseline and the same --profile")
    return json.loads(meta_path.read_text(encoding="utf-8"))


def write_baseline(baseline_dir: Path, results: list[CaseResult], info: dict) -> None:
    baseline_dir.mkdir(parents=True, exist_ok=True)
    entries = {}
    for r in results:
        if r.stream_pcm is None:
            raise RegressionError(f"cannot write a baseline: case {r.case['id']} produced no audio "
                                  f"({r.error})")
        pcm16 = to_pcm16(r.stream_pcm)
        name = f"{r.case['id']}.wav"
        write_wav(baseline_dir / name, pcm16, SAMPLE_RATE)
        entries[r.case["id"]] = {
            "wav": name, "samples": int(len(pcm16)), "frames": r.frames,
            "pcm_float32_sha256": r.hashes[0], "text": r.case["text"],
            "speaker": r.case["speaker"], "language": r.case["language"],
            "code_repeats": M.code_repeats(r.codes0),
        }
    meta = dict(info)
    meta["cases"] = entries
    (baseline_dir / "baseline.json").write_text(
        json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def write_baseline_readme(baseline_dir: Path, info: dict, gates: dict, overall: bool) -> None:
    lines = [
        "# TTS regression golden baseline",
        "",
        f"Produced by `{info['produced_by']}` on {info['created_utc']} (UTC), "
        f"{describe_engine(info['engine'])},",
        f"checkpoint `{info['checkpoint']}`",
        f"(fingerprint `{info['checkpoint_fingerprint']}`), {info['runs_per_case']} runs per case.",
        "One 16-bit 24 kHz mono WAV per case of tools/tts_regression/cases.json (the first "
        "streamed run);",
        "baseline.json holds each case's float32 PCM sha256, length and text.",
        "",
        f"Gates of the producing run (overall {'PASS' if overall else 'FAIL'}):",
        "",
        "| gate | pass | value |",
        "|---|---|---|",
    ]
    value = {
        "determinism": lambda g: f"max unique hashes {g['max_unique_pcm_sha256']}",
        "abs_duration_diff_ms": lambda g: f"max {g['max_ms']} ms",
        "repeat": lambda g: f"{g['total']} repeats ({g['known']} codebook-0 loops of the "
                            "checkpoint itself)",
        "SNR_vs_baseline": lambda g: f"vs baseline min {g['min_vs_baseline_db']} dB (cap "
                                     f"{g['snr_cap_db']}), stream vs offline min "
                                     f"{g['min_stream_vs_offline_db']:.1f} dB",
        "TTFA": lambda g: f"P95 {g.get('p95_ms', float('nan')):.1f} ms over {g['samples']} "
                          "requests (this machine)",
        "stream_bad_audio": lambda g: f"{g['silent_packets']} silent packets, "
                                      f"{g['nonfinite_samples']} NaN/inf",
    }
    for name in GATES:
        lines.append(f"| {name} | {'yes' if gates[name]['pass'] else 'NO'} | "
                     f"{value[name](gates[name])} |")
    lines += ["", "Regenerate (only after an intended change of the engine's output):",
              f"`{info['produced_by']}`", ""]
    (baseline_dir / "README.md").write_text("\n".join(lines), encoding="utf-8")


def new_code_repeats(loops: list[dict],
                     baseline_entry: dict | None) -> tuple[list[dict], list[dict]]:
    """(new, known): a codebook-0 loop the golden baseline's own run already had, at the same
    frames, belongs to the checkpoint (random weights can loop in bf16), not to a regression."""
    held = baseline_entry.get("code_repeats", []) if baseline_entry else []
    return [x for x in loops if x not in held], [x for x in loops if x in held]


def evaluate(results: list[CaseResult], th: dict, baseline_dir: Path) -> tuple[dict, dict]:
    """Per-case metrics and per-gate verdicts (each failing gate with readable reasons)."""
    per_case: dict[str, dict] = {}
    reasons: dict[str, list[str]] = {g: [] for g in GATES}
    baseline = None
    try:
        baseline = load_baseline(baseline_dir)
    except FileNotFoundError as exc:
        reasons["SNR_vs_baseline"].append(str(exc))
    all_ttfa: list[float] = []
    for r in results:
        cid = r.case["id"]
        c: dict = {"text": r.case["text"], "speaker": r.case["speaker"],
                   "language": r.case["language"], "runs": len(r.hashes), "error": r.error}
        per_case[cid] = c
        if r.error or r.stream_pcm is None or r.offline_pcm is None:
            for g in GATES:
                reasons[g].append(f"{cid}: case crashed ({r.error})")
            continue
        all_ttfa.extend(r.ttfa_ms)
        unique = len(set(r.hashes))
        c["determinism"] = {"unique_pcm_sha256": unique, "sha256": sorted(set(r.hashes))}
        if unique > th["determinism_unique_max"]:
            reasons["determinism"].append(f"{cid}: {unique} different PCM hashes over "
                                          f"{len(r.hashes)} runs")

        dur_diff = abs(len(r.stream_pcm) - len(r.offline_pcm)) / SAMPLE_RATE * 1000
        n = min(len(r.stream_pcm), len(r.offline_pcm))
        stream_vs_offline = M.snr_db(r.offline_pcm[:n], r.stream_pcm[:n]) if n else -M.SNR_CAP_DB
        c["duration"] = {"stream_ms": len(r.stream_pcm) / SAMPLE_RATE * 1000,
                         "offline_ms": len(r.offline_pcm) / SAMPLE_RATE * 1000,
                         "abs_duration_diff_ms": dur_diff, "stream_stop_reason": r.stop_reason,
                         "offline_stop_reason": r.offline_stop_reason}
        if dur_diff > th["abs_duration_diff_ms_max"]:
            reasons["abs_duration_diff_ms"].append(
                f"{cid}: stream {c['duration']['stream_ms']:.0f} ms vs offline "
                f"{c['duration']['offline_ms']:.0f} ms (diff {dur_diff:.0f} > "
                f"{th['abs_duration_diff_ms_max']} ms; stream stop={r.stop_reason})")

        entry = baseline["cases"].get(cid) if baseline is not None else None
        crep, known = new_code_repeats(M.code_repeats(r.codes0), entry)
        arep = M.audio_repeats(r.stream_pcm)
        c["repeat"] = {"code_repeats": crep, "known_code_repeats": known, "audio_repeats": arep,
                       "count": len(crep) + len(arep)}
        if len(crep) + len(arep) > th["repeat_max"]:
            reasons["repeat"].append(f"{cid}: {len(crep)} codebook-0 loop(s) {crep[:3]}, "
                                     f"{len(arep)} repeated audio block(s) {arep[:3]}")

        snr: dict = {"stream_vs_offline_db": stream_vs_offline}
        if stream_vs_offline < th["snr_db_min"]:
            reasons["SNR_vs_baseline"].append(
                f"{cid}: stream vs offline decode SNR {stream_vs_offline:.1f} dB < "
                f"{th['snr_db_min']} dB")
        if baseline is not None:
            wav = baseline_dir / entry["wav"] if entry else None
            if entry is None or not wav.is_file():
                reasons["SNR_vs_baseline"].append(
                    f"{cid}: baseline missing ({wav if wav else 'no entry in baseline.json'}); "
                    "re-create it with --update-baseline")
            else:
                ref = from_pcm16(read_baseline_wav(wav))
                cur = from_pcm16(to_pcm16(r.stream_pcm))
                v = M.snr_db(ref, cur)
                snr["vs_baseline_db"] = v
                snr["baseline_samples"] = int(len(ref))
                snr["samples"] = int(len(cur))
                snr["bit_exact_vs_baseline"] = r.hashes[0] == entry.get("pcm_float32_sha256")
                if v < th["snr_db_min"]:
                    reasons["SNR_vs_baseline"].append(
                        f"{cid}: SNR vs golden baseline {v:.1f} dB < {th['snr_db_min']} dB "
                        f"({len(cur)} samples vs baseline {len(ref)})")
        c["snr"] = snr

        c["ttfa_ms"] = r.ttfa_ms
        c["wall_ms"] = r.wall_ms
        bad = M.bad_audio(r.stream_pcm, r.packet_frames)
        c["stream_bad_audio"] = bad
        problems = []
        if bad["empty"]:
            problems.append("empty stream audio")
        if bad["nonfinite_samples"]:
            problems.append(f"{bad['nonfinite_samples']} NaN/inf samples")
        if bad["all_zero"]:
            problems.append("all-zero audio")
        if bad["silent_packets"] > th["silent_packets_max"]:
            problems.append(f"{bad['silent_packets']} silent packet(s) of {bad['packets']}")
        if bad["empty_packets"]:
            problems.append(f"{bad['empty_packets']} empty packet(s)")
        if bad["packet_samples_mismatch"]:
            problems.append("joined PCM differs from the packets' frames by "
                            f"{bad['packet_samples_mismatch']} samples")
        if bad["clipped_fraction"] > th["clipped_fraction_max"]:
            problems.append(f"clipped fraction {bad['clipped_fraction']:.4f} > "
                            f"{th['clipped_fraction_max']}")
        if problems:
            reasons["stream_bad_audio"].append(f"{cid}: " + "; ".join(problems))

    ttfa: dict = {"samples": len(all_ttfa), "threshold_ms": th["ttfa_p95_ms_max"]}
    if all_ttfa:
        ttfa.update({"p50_ms": percentile(all_ttfa, 50, TTFA_PERCENTILE),
                     "p95_ms": percentile(all_ttfa, 95, TTFA_PERCENTILE),
                     "max_ms": max(all_ttfa), "mean_ms": float(np.mean(all_ttfa))})
        if ttfa["p95_ms"] > th["ttfa_p95_ms_max"]:
            reasons["TTFA"].append(f"TTFA P95 {ttfa['p95_ms']:.1f} ms > {th['ttfa_p95_ms_max']} ms "
                                   f"over {len(all_ttfa)} requests")
    else:
        reasons["TTFA"].append("no TTFA measured (no request produced a packet)")

    def values(key, sub):
        return [per_case[k][key][sub] for k in per_case
                if key in per_case[k] and sub in per_case[k][key]]

    summaries = {
        "determinism": {"max_unique_pcm_sha256": max(values("determinism", "unique_pcm_sha256"),
                                                     default=None),
                        "threshold": th["determinism_unique_max"]},
        "abs_duration_diff_ms": {"max_ms": max(values("duration", "abs_duration_diff_ms"),
                                               default=None),
                                 "threshold_ms": th["abs_duration_diff_ms_max"]},
        "repeat": {"total": sum(values("repeat", "count")), "threshold": th["repeat_max"],
                   "known": sum(map(len, values("repeat", "known_code_repeats")))},
        "SNR_vs_baseline": {"min_vs_baseline_db": min(values("snr", "vs_baseline_db"),
                                                      default=None),
                            "min_stream_vs_offline_db": min(values("snr", "stream_vs_offline_db"),
                                                            default=None),
                            "threshold_db": th["snr_db_min"], "snr_cap_db": M.SNR_CAP_DB},
        "TTFA": ttfa,
        "stream_bad_audio": {"silent_packets": sum(values("stream_bad_audio", "silent_packets")),
                             "nonfinite_samples": sum(values("stream_bad_audio",
                                                             "nonfinite_samples")),
                             "max_clipped_fraction": max(values("stream_bad_audio",
                                                                "clipped_fraction"), default=None),
                             "threshold_clipped_fraction": th["clipped_fraction_max"]},
    }
    gates = {g: {"pass": not reasons[g], "reasons": reasons[g], **summaries[g]} for g in GATES}
    return per_case, gates


def describe_engine(info: dict) -> str:
    """One line: where and how the engine ran."""
    graphs = "CUDA graphs" if info["cuda_graphs"] else "eager"
    return (f"{info['device'].upper()} ({info['card']}), {info['dtype']}, "
            f"decoder {info['decoder_dtype']}, {graphs}"
            + (", torch.compile" if info["compile_steps"] else "")
            + (", batch-invariant" if info["batch_invariant"] else ""))


def _update_latest(root: Path, run_id: str) -> None:
    link = root / "latest"
    try:
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(run_id, target_is_directory=True)
    except OSError:
        pass
    (root / "LATEST").write_text(run_id + "\n")


def run_suite(mode: str, profile: str, model_dir: str | None = None, out: str | None = None,
              baseline: str | None = None, update_baseline: bool = False,
              only: list[str] | None = None, runs: int | None = None, log=print) -> dict:
    from tts_engine.checkpoint import checkpoint_stamp

    if mode not in RUNS_PER_MODE:
        raise RegressionError(f"unknown mode {mode!r}; valid: {sorted(RUNS_PER_MODE)}")
    th = thresholds_for(profile)
    cases = load_cases(only=only)
    runs = runs or RUNS_PER_MODE[mode]
    started = _dt.datetime.now(_dt.UTC)
    run_id = started.strftime("%Y%m%dT%H%M%S") + f"Z-{mode}-{profile}-{os.getpid()}"
    out_root = Path(out) if out else output_root() / "tts_regression"
    run_dir = out_root / run_id
    run_dir.mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    engine = open_engine(model_dir, profile_device(profile))
    load_s = time.perf_counter() - t0
    model_path = Path(engine.config.resolved_model_dir)
    engine_cfg = engine_info(engine)
    baseline_dir = Path(baseline) if baseline else baseline_dir_for(engine_cfg)
    log(f"tts_regression {run_id}: {len(cases)} cases x {runs} runs, profile {profile}, "
        f"{describe_engine(engine_cfg)}, engine load {load_s:.1f} s, baseline "
        f"{_display(baseline_dir)}")
    try:
        results = run_cases(engine, cases, runs, log)
    finally:
        engine.close()
    info = {
        "produced_by": f"python -m tools.tts_regression --mode {mode} --profile {profile} "
                       "--update-baseline",
        "created_utc": started.isoformat(timespec="seconds"),
        "checkpoint": model_path.name,
        "checkpoint_fingerprint": checkpoint_stamp(model_path),
        "device": engine_cfg["device"], "engine": engine_cfg, "machine": platform.machine(),
        "runs_per_case": runs, "mode": mode,
    }
    if update_baseline:
        write_baseline(baseline_dir, results, info)
        log(f"baseline written to {baseline_dir}")

    per_case, gates = evaluate(results, th, baseline_dir)
    base_meta = None
    try:
        base_meta = load_baseline(baseline_dir)
    except FileNotFoundError:
        pass
    base_fp = base_meta.get("checkpoint_fingerprint") if base_meta else None
    run_fp = checkpoint_stamp(model_path)
    if base_fp and run_fp != base_fp and not gates["SNR_vs_baseline"]["pass"]:
        gates["SNR_vs_baseline"]["reasons"].append(
            f"note: the model's checkpoint fingerprint {run_fp} differs from the baseline's "
            f"{base_fp}")
    wav_dir = None
    if mode == "full":
        wav_dir = run_dir / "wav"
        wav_dir.mkdir(exist_ok=True)
        for r in results:
            if r.stream_pcm is not None:
                write_wav(wav_dir / f"{r.case['id']}.stream.wav", to_pcm16(r.stream_pcm),
                          SAMPLE_RATE)
            if r.offline_pcm is not None:
                write_wav(wav_dir / f"{r.case['id']}.offline.wav", to_pcm16(r.offline_pcm),
                          SAMPLE_RATE)
    overall = all(g["pass"] for g in gates.values())
    if update_baseline:
        write_baseline_readme(baseline_dir, info, gates, overall)
    wall_s = time.perf_counter() - t0
    summary = {
        "run_id": run_id, "mode": mode, "profile": profile, "runs_per_case": runs,
        "started_utc": started.isoformat(timespec="seconds"), "wall_s": round(wall_s, 2),
        "engine_load_s": round(load_s, 2), "engine": engine_cfg, "thresholds": th,
        "model": {"dir_name": model_path.name,
                  "checkpoint_fingerprint": checkpoint_stamp(model_path)},
        "baseline": {"dir": _display(baseline_dir), "updated_this_run": update_baseline,
                     "checkpoint_fingerprint": (base_meta.get("checkpoint_fingerprint")
                                                if base_meta else None),
                     "created_utc": base_meta.get("created_utc") if base_meta else None},
        "gates": gates, "cases": per_case, "wav_dir": wav_dir.name if wav_dir else None,
        "pass": overall,
        "failed_gates": [g for g in GATES if not gates[g]["pass"]],
    }
    brief = {"run_id": run_id, "mode": mode, "profile": profile, "pass": overall,
             "gates": {g: {"pass": gates[g]["pass"], "reasons": gates[g]["reasons"]}
                       for g in GATES}}
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n",
                                          encoding="utf-8")
    (run_dir / "summary_brief.json").write_text(
        json.dumps(brief, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    _update_latest(out_root, run_id)
    summary["run_dir"] = str(run_dir)
    return summary


def _display(p: Path) -> str:
    try:
        return str(p.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(p)


def _torch_threads() -> int:
    import torch

    return int(torch.get_num_threads())
