"""Turn several AutoRTC run folders (e.g. the stability tier: mini x 5) into a fluctuation
report: per gate metric the median, P95 and sigma over runs, and a suggested threshold.

    python -m tools.autortc.baseline_stability RUN_DIR [RUN_DIR ...] --out DIR

Suggested threshold = max over runs + 3 sigma, rounded up; suggested PRIMARY_KPI
tolerance = 3 sigma of the runs' eot_to_first_audio P95 (the run-to-run noise), rounded
up; suggested golden run = the run whose P95 is nearest the median. False stops are
pooled over the set (their gate is a share: at most 1 in 10 backchannel and noise
cases). A calibration aid:
a profile is changed by a person, with the data, never to make one run pass.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

from streamtalk_common.stats import percentile

from .common import read_json, write_json
from .gates import gated_values

METRICS = {  # run-level statistic of each gate metric, over the cases its gate counts
    "eot_to_first_audio_p95_ms": ("eot_to_first_audio_ms", "p95", False),
    "tts_first_to_publish_p95_ms": ("tts_first_to_publish_ms", "p95", False),
    "max_gap_ms": ("max_gap_ms", "max", True),
    "fast_lane_ttft_p95_ms": ("fast_lane_ttft_ms", "p95", False),
    "inter_arrival_p95_ms": ("inter_arrival_p95_ms", "p95", False),
    "clipping_ratio": ("clipping_ratio", "max", False),
    "audible_dropout": ("audible_dropout", "sum", True),
    "premature_replies": ("premature_reply", "sum", False),
    "resume_gap_p95_ms": ("resume_gap_ms", "p95", False),
    "barge_in_stop_p50_ms": ("stop_latency_ms", "p50", False),
}


def run_stat(rows: list[dict[str, Any]], key: str, how: str, p0_only: bool) -> float | None:
    """The statistic the gate takes of one run (gates.gated_values: capture OK only)."""
    v = gated_values(rows, key, p0_only)
    if not v:
        return None
    return {"p95": lambda: percentile(v, 95), "p50": lambda: percentile(v, 50),
            "max": lambda: max(v), "sum": lambda: sum(v)}[how]()


def analyse(run_dirs: list[Path]) -> dict[str, Any]:
    runs = [read_json(d / "summary.json") for d in run_dirs]
    names = [f"{d.resolve().parent.name}/{d.name}" for d in run_dirs]  # no machine paths
    out: dict[str, Any] = {"runs": names, "n_runs": len(runs),
                           "samples": sum(len(r["rows"]) for r in runs), "metrics": {}}
    for name, (key, how, p0_only) in METRICS.items():
        stats = [(n, run_stat(r["rows"], key, how, p0_only))
                 for n, r in zip(names, runs, strict=True)]
        stats = [(n, x) for n, x in stats if x is not None]  # a run without data has no say
        vals = [x for _, x in stats]
        per_case = [v for r in runs for v in gated_values(r["rows"], key, p0_only)]
        if not vals:
            continue
        sigma = float(np.std(vals))
        sug = max(vals) + 3 * sigma
        out["metrics"][name] = {
            "run_values": [round(v, 3) for v in vals], "runs": [n for n, _ in stats],
            "median": round(float(np.median(vals)), 3),
            "p95": round(float(np.percentile(vals, 95)), 3), "sigma": round(sigma, 3),
            "case_median": round(float(np.median(per_case)), 3),
            "case_p95": round(float(np.percentile(per_case, 95)), 3),
            "suggested": sug if sug < 1 else math.ceil(sug / 5) * 5}
    kpi = out["metrics"].get("eot_to_first_audio_p95_ms")
    if kpi:
        out["suggested_primary_kpi_max_regression_ms"] = math.ceil(3 * kpi["sigma"] / 10) * 10
        nearest = min(range(len(kpi["run_values"])),
                      key=lambda i: abs(kpi["run_values"][i] - kpi["median"]))
        out["suggested_golden_run"] = kpi["runs"][nearest]
    stops = [v for r in runs for v in gated_values(r["rows"], "false_stop")]
    if stops:
        out["false_stops"] = {"count": int(sum(stops)), "cases": len(stops),
                              "share": round(sum(stops) / len(stops), 4)}
    out["retries"] = sum(r["counts"]["retries"] for r in runs)
    out["capture_status"] = [r["counts"]["capture_status"] for r in runs]
    return out


def render(a: dict[str, Any]) -> str:
    lines = [f"# AutoRTC stability: {a['n_runs']} runs, {a['samples']} case samples, "
             f"{a['retries']} retries", "", "| metric | runs | median | P95 | sigma | "
             "case median | case P95 | suggested |", "|---|---|---|---|---|---|---|---|"]
    for k, m in a["metrics"].items():
        lines.append(f"| {k} | {m['run_values']} | {m['median']} | {m['p95']} | {m['sigma']} | "
                     f"{m['case_median']} | {m['case_p95']} | {m['suggested']} |")
    if "suggested_primary_kpi_max_regression_ms" in a:
        lines += ["", f"PRIMARY_KPI tolerance (3 sigma of the run P95s): "
                  f"{a['suggested_primary_kpi_max_regression_ms']} ms; golden candidate "
                  f"(P95 nearest the median): {a['suggested_golden_run']}"]
    if "false_stops" in a:
        f = a["false_stops"]
        lines += ["", f"False stops over the set: {f['count']} of {f['cases']} backchannel and "
                  f"noise cases (share {f['share']}; gate: at most 0.1)"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args(argv)
    res = analyse([d for d in a.runs if (d / "summary.json").exists()])
    a.out.mkdir(parents=True, exist_ok=True)
    write_json(a.out / "stability.json", res)
    (a.out / "stability.md").write_text(render(res))
    print(render(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
