"""AutoRTC outputs: report.md (KPI current/baseline/delta first, gates, counts, fixes),
summary.json, metrics.csv, and the pictures of `plots` (PNG), linked from report.md."""

from __future__ import annotations

import csv
import statistics
from pathlib import Path
from typing import Any

from streamtalk_common.latency_breakdown import SEGMENTS

from . import plots
from .common import write_json

COLUMNS = ["case_id", "priority", "capture_status", "retries", "audio_valid", "reply_rms",
           "full_rms", "post_rms", "max_gap_ms", "audible_dropout", "clipping_ratio",
           "mel_distance", "hf_ratio_drop", "speed_drift", "eot_to_first_audio_ms",
           "eot_to_vad_end_ms", "tts_first_to_publish_ms", "fast_lane_ttft_ms",
           "inter_arrival_p95_ms", "input_spikes", "pre_rms", "turn_taking",
           "premature_reply", "premature_lead_ms", "false_stop", "resume_gap_ms",
           "stop_latency_ms", "barge_in_answered", "turn_taking_void", "trace_id", "error",
           "diagnosis"]


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k) for k in COLUMNS})


def render_md(rows: list[dict[str, Any]], result: dict[str, Any]) -> str:
    kpi, run = result["primary_kpi"], result.get("run", {})
    lines = [f"# AutoRTC report: {result['verdict']}", "",
             f"Run `{run.get('run_id')}`, tier {run.get('tier')}, cases {run.get('cases_file')}, "
             f"profile `{result['profile']}`, wall {run.get('wall_s')} s.", "",
             f"**PRIMARY_KPI {kpi['name']}: current {_fmt(kpi['value'])} ms, baseline "
             f"{_fmt(kpi['baseline'])} ms ({_fmt(kpi['baseline_version'])}), delta "
             f"{_fmt(kpi['delta'])} ms**", ""]
    if result.get("fail_reasons"):
        lines += ["## Why it failed", ""] + [f"- {r}" for r in result["fail_reasons"]] + [""]
    lines += ["## Gates", "",
             "| gate | value | threshold | n | status |", "|---|---|---|---|---|"]
    for g in result["gates"]:
        lines.append(f"| {g['gate']} | {_fmt(g['value'])} | {g['threshold']} | {g['n']} | "
                     f"{g['status']} |")
    c = result["counts"]
    lines += ["", "## Counts", "",
              f"- cases: {c['cases']} (P0 {c['p0']}), retries: {c['retries']}",
              f"- reply WAVs analysed: {c['reply_wavs']}, pre_rtc WAVs: {c['pre_rtc_wavs']}",
              "- capture_status: " + ", ".join(f"{k} {v}" for k, v in
                                               sorted(c["capture_status"].items()))]
    if result.get("warnings"):
        lines += ["", "## Warnings (P1 fingerprints, not gating)", ""]
        lines += [f"- {w}" for w in result["warnings"]]
    fails = [g for g in result["gates"] if g["status"] != "PASS" and g["value"] is not None]
    if fails:
        lines += ["", "## Suggested fixes", ""]
        lines += [f"- **{g['gate']}** ({g['status']}): {g['fix']}" for g in fails]
    if result.get("case_diagnoses"):
        lines += ["", "## Cases without a valid capture", ""]
        lines += [f"- {d}" for d in result["case_diagnoses"]]
    pngs = result.get("pngs", [])
    if pngs:
        lines += ["", "## Pictures", ""]
        lines += [f"![{Path(p).parent.name or 'latency'}]({p})" for p in pngs]
    lines += turn_latency_md(rows)
    lines += ["", "## Cases", "", "| case | P | capture | eot->first audio ms | max gap ms | "
              "dropout | mel dB | tts->publish ms | ttft ms | retries | turn-taking |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(k)) for k in (
            "case_id", "priority", "capture_status", "eot_to_first_audio_ms", "max_gap_ms",
            "audible_dropout", "mel_distance", "tts_first_to_publish_ms", "fast_lane_ttft_ms",
            "retries", "turn_taking_summary")) + " |")
    return "\n".join(lines) + "\n"


def turn_latency_md(rows: list[dict[str, Any]]) -> list[str]:
    """The agent's own breakdown of each case's turn (what it publishes on
    `streamtalk.latency`), and the median per stage over the cases that have one."""
    have = [r for r in rows if r.get("agent_turn_latency_ms")]
    if not have:
        return []
    names = [name for name, _, _ in SEGMENTS]
    spans = " -> ".join([SEGMENTS[0][1]] + [b for _, _, b in SEGMENTS])
    lines = ["", "## Turn latency in the agent", "", f"Stages between the agent's trace points "
             f"({spans}); they add up to the total.", "",
             "| case | " + " | ".join(f"{n} ms" for n in names) + " | total ms |",
             "|---|" + "---|" * (len(names) + 1)]
    for r in have:
        ms = [r["agent_turn_latency_ms"].get(n) for n in names]
        lines.append(f"| {r['case_id']} | " + " | ".join(_fmt(v) for v in ms)
                     + f" | {_fmt(sum(v for v in ms if v is not None))} |")
    medians = [statistics.median(r["agent_turn_latency_ms"][n] for r in have) for n in names]
    lines.append(f"| median of {len(have)} | " + " | ".join(_fmt(v) for v in medians) + " | - |")
    return lines


def write_pngs(out: Path, rows: list[dict[str, Any]], result: dict[str, Any]) -> list[str]:
    """latency.png for the run plus waveform.png in each case folder (paths relative to out)."""
    kpi = result["primary_kpi"]
    pngs = [plots.latency_png(out, rows, result.get("thresholds", {}).get(
        "eot_to_first_audio_p95_ms"), kpi.get("baseline"))]
    for r in rows:
        if r.get("case_dir"):
            name = plots.waveform_png(out / r["case_dir"], f"{r['case_id']}: "
                                      f"{r.get('capture_status')}")
            pngs.append(f"{r['case_dir']}/{name}" if name else None)
    return [p for p in pngs if p]


def write_all(out: Path, rows: list[dict[str, Any]], result: dict[str, Any]) -> None:
    write_csv(out / "metrics.csv", rows)
    result["pngs"] = write_pngs(out, rows, result)
    write_json(out / "summary.json", {**result, "rows": rows})
    (out / "report.md").write_text(render_md(rows, result))


GOLDEN_CASE_FILES = ("pre_rtc.wav", "post_rtc_reply.wav", "probe_result.json", "user_result.json",
                     "waveform.png")


def promote(run: Path, golden: Path, version: str, profile: str = "ci",
            wav_cases: int | None = None) -> Path:
    """Copy a run into the golden baseline folder: summary.json (gates re-evaluated with
    `profile`, plus baseline_version and the PRIMARY_KPI value), metrics.csv, report.md with
    its pictures, and per case (the first `wav_cases`, default all) the files of
    GOLDEN_CASE_FILES under cases/<case_id>/."""
    import json
    import shutil

    from . import gates

    old = json.loads((run / "summary.json").read_text())
    rows = old["rows"]
    result = gates.evaluate(rows, gates.load_profile(profile), None)
    if result["verdict"] != "PASS":
        raise SystemExit(f"{run}: the run does not pass profile {profile}; a failing run is no "
                         f"baseline: {result['fail_reasons']}")
    result["run"] = old.get("run", {})
    result["baseline_version"] = version
    result["primary_kpi"]["baseline_version"] = version
    golden.mkdir(parents=True, exist_ok=True)
    if (golden / "cases").exists():
        shutil.rmtree(golden / "cases")  # no case files of an older baseline stay behind
    for i, row in enumerate(rows):
        src = run / row["case_dir"] if row.get("case_dir") else None
        row["case_dir"] = None
        if src is None or (wav_cases is not None and i >= wav_cases):
            continue
        if not (src / "waveform.png").exists():  # a run made before the pictures existed
            plots.waveform_png(src, f"{row['case_id']}: {row.get('capture_status')}")
        dst = golden / "cases" / row["case_id"]
        dst.mkdir(parents=True, exist_ok=True)
        for name in GOLDEN_CASE_FILES:
            if (src / name).exists():
                shutil.copy(src / name, dst / name)
        row["case_dir"] = f"cases/{row['case_id']}"
        user = dst / "user_result.json"
        if user.exists():  # keep no path of the machine that made the run
            data = json.loads(user.read_text())
            data["wav"] = Path(str(data.get("wav", ""))).name
            write_json(user, data)
    write_all(golden, rows, result)  # summary.json carries baseline_version from `result`
    return golden


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(description="promote an AutoRTC run to the golden baseline")
    p.add_argument("run", type=Path)
    p.add_argument("--golden", type=Path, default=Path("golden/autortc"))
    p.add_argument("--version", required=True)
    p.add_argument("--profile", default="ci")
    p.add_argument("--wav-cases", type=int, default=None, help="keep the files of only the "
                   "first N cases (default: all)")
    a = p.parse_args(argv)
    print(promote(a.run, a.golden, a.version, a.profile, a.wav_cases))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
