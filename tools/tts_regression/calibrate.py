"""Calibrate the `ci` profile's TTFA threshold on this machine.

    python -m tools.tts_regression.calibrate --rounds 5 [--write]

Method: load the engine once (tiny checkpoint, CPU), then run R rounds; each
round is exactly the fast mode's timing workload (every case 3 times) and
yields one TTFA P95 (nearest rank). The threshold is HEADROOM x the largest
round P95, rounded up to 10 ms. The headroom absorbs the noise of a shared
2-core machine; it is fixed before the data is seen, and the threshold is never
raised to make a failing run pass (re-calibrate only on a deliberate change of
hardware or engine, and record it). --write stores the data in profiles.json.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform

from streamtalk_common.stats import latency_summary

from .suite import PROFILES_PATH, RUNS_PER_MODE, TTFA_PERCENTILE, load_cases, open_engine, run_cases

HEADROOM = 1.5


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.tts_regression.calibrate")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--write", action="store_true",
                    help="write the result into profiles.json (ci profile)")
    args = ap.parse_args(argv)
    cases = load_cases()
    engine = open_engine(None)
    rounds = []
    try:
        for i in range(args.rounds):
            results = run_cases(engine, cases, RUNS_PER_MODE["fast"], log=lambda *_: None)
            ttfa = [t for r in results for t in r.ttfa_ms]
            summary = latency_summary(ttfa, digits=2, method=TTFA_PERCENTILE)
            rounds.append({"round": i, "samples": len(ttfa), "p50_ms": summary["p50_ms"],
                           "p95_ms": summary["p95_ms"], "max_ms": summary["max_ms"]})
            print(json.dumps(rounds[-1]))
    finally:
        engine.close()
    worst = max(r["p95_ms"] for r in rounds)
    threshold = int(math.ceil(worst * HEADROOM / 10.0) * 10)
    calib = {
        "method": (f"{args.rounds} rounds of the fast-mode workload ({len(cases)} cases x "
                   f"{RUNS_PER_MODE['fast']} runs, one engine, CPU, tiny checkpoint); threshold = "
                   f"ceil10({HEADROOM} x max round TTFA P95)"),
        "tool": f"python -m tools.tts_regression.calibrate --rounds {args.rounds} --write",
        "date_utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(), "machine": platform.machine(),
        "headroom": HEADROOM, "max_round_p95_ms": worst, "rounds": rounds,
    }
    print(f"ci TTFA P95 threshold: {threshold} ms (max round P95 {worst} ms x {HEADROOM})")
    if args.write:
        profiles = json.loads(PROFILES_PATH.read_text(encoding="utf-8"))
        profiles["profiles"]["ci"]["ttfa_p95_ms_max"] = threshold
        profiles["profiles"]["ci"]["calibration"] = calib
        PROFILES_PATH.write_text(json.dumps(profiles, indent=2) + "\n", encoding="utf-8")
        print(f"written to {PROFILES_PATH.name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
