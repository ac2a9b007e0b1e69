#!/usr/bin/env bash
# AutoRTC end-to-end regression (docs/AUTORTC.md).
#   scripts/run_autortc.sh --tier mini|fast|nightly|stability|load [--profile ci|gpu]
#       [--out DIR] [--baseline SUMMARY.json|none] [-- extra run_suite args]
# The baseline defaults to the tier's own golden, golden/autortc/<tier>/summary.json, where
# one exists (the fast tier's), else golden/autortc/summary.json (the mini cases').
# Starts its own LiveKit server, dev backend and agent worker (tiny checkpoint) on
# loopback ports unless extra args say otherwise; exit 0 = all gates pass.
# load: K = 1, 2, 4 conversations at once on 2 LiveKit nodes (Redis) and 2 workers,
# stopping at the first K whose gates fail (tools/autortc/load_tier.py; extra args after
# -- go to it, e.g. -- --ks 1 2 --workers 1).
set -euo pipefail
cd "$(dirname "$0")/.."
HOME_DIR="${STREAMTALK_HOME:-$HOME/.cache/streamtalk}"
PY="${PYTHON:-$HOME_DIR/venv/bin/python}"
[ -x "$PY" ] || PY=python3
TIER=mini; PROFILE=ci; OUT=""; BASELINE=""; EXTRA=()
while [ $# -gt 0 ]; do
  case "$1" in
    --tier) TIER="$2"; shift 2;;
    --profile) PROFILE="$2"; shift 2;;
    --out) OUT="$2"; shift 2;;
    --baseline) BASELINE="$2"; shift 2;;
    --) shift; EXTRA=("$@"); break;;
    *) echo "unknown argument $1" >&2; exit 2;;
  esac
done
if [ -z "$BASELINE" ]; then
  BASELINE="golden/autortc/$TIER/summary.json"
  [ -f "$BASELINE" ] || BASELINE="golden/autortc/summary.json"
fi
OUTPUT_ROOT="${STREAMTALK_OUTPUT:-output}"
OUT="${OUT:-$OUTPUT_ROOT/autortc/$TIER-$(date +%Y%m%d-%H%M%S)}"
BASE_ARGS=()  # --baseline none: no golden comparison (the stability tier, a new baseline)
[ "$BASELINE" != none ] && BASE_ARGS=(--baseline "$BASELINE")
run() {  # run DIR TIMEOUT ARGS...
  local dir="$1" limit="$2"; shift 2
  timeout --kill-after=20 "$limit" "$PY" -m tools.autortc.run_suite --start-stack \
    --profile "$PROFILE" --out "$dir" "${BASE_ARGS[@]}" "$@" "${EXTRA[@]}"
}
case "$TIER" in
  mini) run "$OUT" 420 --tier mini --cases tools/autortc/cases/mini_cases.json --total-timeout-s 360;;
  fast) run "$OUT" 1500 --tier fast --cases tools/autortc/cases/all_cases.json --total-timeout-s 1400;;
  nightly) run "$OUT" 1800 --tier nightly --cases tools/autortc/cases/all_cases.json --turns 20 \
             --between-s 20 --total-timeout-s 1700;;
  stability)
    for k in $(seq 1 "${AUTORTC_STABILITY_RUNS:-5}"); do
      run "$OUT/run-$k" 420 --tier stability --cases tools/autortc/cases/mini_cases.json \
        --total-timeout-s 360 || true
    done
    "$PY" -m tools.autortc.baseline_stability "$OUT"/run-* --out "$OUT"
    echo "stability report: $OUT/stability.md (gate results above are informational)"
    exit 0;;
  load)
    timeout --kill-after=20 1800 "$PY" -m tools.autortc.load_tier --out "$OUT" --profile "$PROFILE" \
      "${EXTRA[@]}";;
  *) echo "unknown tier $TIER" >&2; exit 2;;
esac
