"""CLI: python -m tools.tts_regression --mode fast|full --profile ci|gpu."""

from __future__ import annotations

import argparse
import sys

from .suite import GATES, RUNS_PER_MODE, RegressionError, run_suite


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.tts_regression", description=__doc__)
    ap.add_argument("--mode", choices=sorted(RUNS_PER_MODE), default="fast",
                    help="fast: 3 runs per case, no WAVs; full: 10 runs per case, WAVs written")
    ap.add_argument("--profile", choices=["ci", "gpu"], default="ci",
                    help="device and timing thresholds (profiles.json): ci on the CPU, "
                         "gpu on CUDA with the golden configuration (graphs); "
                         "the rest from TTS_* variables")
    ap.add_argument("--model-dir", default=None,
                    help="model directory (default: the tiny checkpoint, seed 0)")
    ap.add_argument("--out", default=None,
                    help="output root (default: $STREAMTALK_OUTPUT/tts_regression)")
    ap.add_argument("--baseline", default=None,
                    help="golden baseline folder (default: golden/tts on a CPU, "
                         "golden/tts/gpu-<card> on a GPU)")
    ap.add_argument("--update-baseline", action="store_true",
                    help="write this run's audio as the new baseline")
    ap.add_argument("--cases", default=None, help="comma-separated case ids (default: all)")
    args = ap.parse_args(argv)
    try:
        summary = run_suite(args.mode, args.profile, args.model_dir, args.out, args.baseline,
                            args.update_baseline,
                            only=args.cases.split(",") if args.cases else None)
    except (RegressionError, FileNotFoundError) as exc:
        print(f"tts_regression: error: {exc}", file=sys.stderr)
        return 2
    for name in GATES:
        gate = summary["gates"][name]
        print(f"  [{'PASS' if gate['pass'] else 'FAIL'}] {name}")
        for reason in gate["reasons"]:
            print(f"         - {reason}")
    verdict = "PASS" if summary["pass"] else "FAIL (" + ", ".join(summary["failed_gates"]) + ")"
    print(f"tts_regression {summary['run_id']}: {verdict} in {summary['wall_s']:.1f} s; "
          f"{summary['run_dir']}")
    return 0 if summary["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
