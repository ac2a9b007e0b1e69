#!/usr/bin/env bash
# TTS regression (the six gates of docs/TTS_REGRESSION.md) against the golden baseline of the
# profile's device.
#   scripts/run_ci_regression.sh --mode fast|full [--profile ci|gpu] [extra args of tools.tts_regression]
# Output: $STREAMTALK_OUTPUT/tts_regression/<run_id>/ (summary.json, summary_brief.json, WAVs in full mode)
# and a `latest` link. Exit status: 0 all gates pass, 1 a gate failed, 2 the suite could not run.
. "$(dirname "$0")/common.sh"

MODE=fast
PROFILE=ci
EXTRA=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --mode) MODE="${2:?--mode needs fast or full}"; shift 2 ;;
        --profile) PROFILE="${2:?--profile needs ci or gpu}"; shift 2 ;;
        -h|--help) sed -n 2,6p "$0"; exit 0 ;;
        *) EXTRA+=("$1"); shift ;;
    esac
done
[[ "$MODE" == fast || "$MODE" == full ]] || die "--mode must be fast or full, not '$MODE'"
[[ "$PROFILE" == ci || "$PROFILE" == gpu ]] || die "--profile must be ci or gpu, not '$PROFILE'"
[[ -x "$PY" ]] || die "venv python $PY missing; run scripts/setup_venv.sh first"

cd "$REPO_ROOT"
log "ensuring the tiny checkpoint in $STREAMTALK_HOME/checkpoints/tiny"
MODEL_DIR="$("$PY" -c 'from tts_engine.checkpoint import ensure_checkpoint; from tts_engine.config import cache_root; print(ensure_checkpoint(cache_root() / "checkpoints" / "tiny", "tiny", seed=0))')"
log "TTS regression: mode $MODE, profile $PROFILE"
# the baseline of the device the profile runs on: golden/tts, or golden/tts/gpu-<card>
exec "$PY" -m tools.tts_regression --mode "$MODE" --profile "$PROFILE" --model-dir "$MODEL_DIR" \
    ${EXTRA[@]+"${EXTRA[@]}"}
