#!/usr/bin/env bash
# Run the GPU benchmark set on a CUDA machine; results as JSON + a log.
# Usage: scripts/gpu_bench.sh OUT_DIR [sections...]
#   sections: check parity step decoder e2e metrics memory launches profile cancel divergence
#             invariant invariant_cost batch peer compiled regression (default: all)
#   parity: greedy codes of ours against the official qwen-tts (tools/gpu_parity.py), float32 and
#          bfloat16, presets tiny, custom:256,6,256,3 and 0.6b; the official side runs with
#          .whl/parity/ (transformers 4.57.3) installed in /tmp/parity-site ahead of the host's packages
#   metrics: per-packet metrics on vs off in one engine of 64 rows, alternating rounds of
#          METRICS_CONCURRENCY (default 1 64) medium replies at once; about 4 minutes on an H200
#   memory: the engine's start-up GPU memory at each maximum batch in MEMORY_LEVELS (default
#          16 64 256; 128 left out to stay within one 10-minute call: each level is a fresh
#          process that loads, captures its graphs and warms up, up to ~2 minutes at 256 rows)
#   batch: the server under a concurrency ladder (BATCH_LADDER, default 1 4 16 64 128 256),
#          then Poisson arrivals (BATCH_RATES requests/s, default 2 5 10), BATCH_DURATION s
#          (default 30) each; fits one 10-minute call on its own; the server's slow-turn lines
#          go to OUT/slow_turns.txt
#   profile: a graph-replayed frame's device time at PROFILE_BATCHES rows (default 1 64), by kernel
#          family and the largest kernels one by one (the engine as configured: compiled on CUDA)
#   step: STEP_VARIANTS (graph eager), STEP_DECODERS (tf32, the engine's default; also float32, bfloat16)
#   invariant: batch-invariant mode's proof (TTS_BATCH_INVARIANT=1, bench invariance): 32 requests,
#          greedy and seeded, solo and in random mixes of 2, 16, 64 and 256, and a mix without graphs:
#          PCM bit-identical (INVARIANT_PROOF_ARGS adds arguments); the first start compiles the kernels
#   invariant_cost: the server in the default mode and in invariant mode (TTS_MAX_BATCH=64), each at
#          concurrency 1, 16 and 64 for INVARIANT_DURATION s (default 15): audio s/s, TTFA, and whether
#          invariant mode costs at most 15% of the audio s/s at 16 (the bar for making it the GPU
#          default). Each of the two takes about 5 minutes: under a 10-minute limit, one call each
#   compiled: engine start-up and e2e (medium replies) without compile, then with TTS_COMPILE=1
#          from an empty compile cache (cold) and again from the cache it left (warm, a second
#          process); every batch bucket (TTS_MAX_BATCH as set, default all rows the card holds)
#   regression: the TTS regression's fast mode in the golden GPU configuration (tiny checkpoint)
#          against this card's baseline golden/tts/gpu-<card>; where there is none yet, it is
#          created first (full mode) and packed into OUT_DIR/gpu-<card>.tar to be committed
# Wheels for packages the GPU host lacks may sit in .whl/ (scripts/fetch_gpu_wheels.sh).
set -uo pipefail
OUT_DIR="${1:?usage: scripts/gpu_bench.sh OUT_DIR [sections...]}"
shift
SECTIONS="${*:-check parity step decoder e2e metrics memory launches profile cancel divergence invariant invariant_cost batch peer compiled regression}"
cd "$(dirname "$0")/.."
mkdir -p "$OUT_DIR"
RES="$OUT_DIR/parts"
mkdir -p "$RES"
export PYTHONUNBUFFERED=1 STREAMTALK_HOME="${STREAMTALK_HOME:-/tmp/streamtalk-home}"
WHEELS="${GPU_WHEELS:-.whl}"
if compgen -G "$WHEELS/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$WHEELS"/*.whl || exit 1
    export PYTHONPATH="/tmp/site:$PWD"
else
    export PYTHONPATH="$PWD"
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)'
CK="$STREAMTALK_HOME/bench-0.6b"
B="python3 -m tts_engine bench"
step() { echo "=== $1 ($(date +%H:%M:%S))"; }
has() { [[ " $SECTIONS " == *" $1 "* ]]; }
# start_server LOG [VAR=value...]: `tts_engine serve` on :9000 in the background (SERVER = its pid), with the
# benchmark checkpoint's replies never ending by themselves (the client hangs up at each reply's length);
# returns once /readyz answers, or fails with the log's tail if the server exits or is not ready in 300 s
start_server() {
    local log=$1
    shift
    env "$@" TTS_MAX_NEW_TOKENS=670 python3 -m tts_engine serve --model-dir "$CK" --port 9000 >"$log" 2>&1 &
    SERVER=$!
    for _ in $(seq 1 300); do
        curl -sf http://127.0.0.1:9000/readyz >/dev/null && return 0
        kill -0 $SERVER 2>/dev/null || { echo "server exited before it was ready:"; tail -20 "$log"; return 1; }
        sleep 1
    done
    echo "server not ready in 300 s:"; tail -20 "$log"; kill $SERVER; wait $SERVER 2>/dev/null; return 1
}
stop_server() { kill $SERVER; wait $SERVER 2>/dev/null; }

step prepare
$B prepare "$CK" --preset 0.6b --out "$RES/prepare.json" || exit 1
if has check; then
    step "batch graphs == eager, invariant mode == solo (pytest, tiny)"
    python3 -m pytest -q -s -p no:cacheprovider tests/gpu
fi
if has parity; then
    step "parity with the official implementation (float32, bfloat16)"
    if compgen -G "$WHEELS/parity/*.whl" >/dev/null; then
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target /tmp/parity-site "$WHEELS"/parity/*.whl \
            && python3 -m tools.gpu_parity --out "$OUT_DIR/parity" --official-python python3 \
                --official-pythonpath /tmp/parity-site
        [[ -f "$OUT_DIR/parity/gpu_parity.json" ]] && cp "$OUT_DIR/parity/gpu_parity.json" "$RES/parity.json"
    else
        echo "parity: no wheels in $WHEELS/parity (the official qwen-tts and transformers 4.57.3):" \
            "run scripts/fetch_gpu_wheels.sh and bring .whl/ along; section skipped"
    fi
fi
has step && { step "batch step"; $B step --model-dir "$CK" --variants ${STEP_VARIANTS:-graph eager} \
    --decoder-dtypes ${STEP_DECODERS:-tf32} --out "$RES/step.json"; }
has decoder && { step decoder; $B decoder --model-dir "$CK" --frames 200 --out "$RES/decoder.json"; }
has e2e && { step e2e; $B e2e --model-dir "$CK" --out "$RES/e2e.json"; }
has metrics && { step "per-packet metrics on vs off"; $B metrics --model-dir "$CK" \
    --concurrency ${METRICS_CONCURRENCY:-1 64} --out "$RES/metrics_ab.json"; }
has memory && { step "start-up memory per maximum batch"; $B memory --model-dir "$CK" \
    --max-batch ${MEMORY_LEVELS:-16 64 256} --out "$RES/memory.json"; }
has launches && { step launches; $B launches --model-dir "$CK" --out "$RES/launches.json"; }
has profile && { step "kernel profile of a frame"; $B profile --model-dir "$CK" \
    --batches ${PROFILE_BATCHES:-1 64} --out "$RES/profile.json"; }
has divergence && { step divergence; $B divergence --model-dir "$CK" --out "$RES/divergence.json"; }
has cancel && { step cancel; $B cancel --model-dir "$CK" --rounds 1000 --concurrency 16 --out "$RES/cancel.json"; }
if has invariant; then
    step "batch-invariant mode: 32 requests solo and in mixes of 2, 16, 64, 256 (graphs), one mix eager"
    # shellcheck disable=SC2086  # INVARIANT_PROOF_ARGS is a list of arguments
    $B invariance --model-dir "$CK" --out "$RES/invariance.json" ${INVARIANT_PROOF_ARGS:-}
fi
if has invariant_cost; then
    for MODE in default invariant; do
        step "batch-invariant mode's cost: the server in the $MODE mode at concurrency 1, 16, 64"
        if start_server "$OUT_DIR/server_$MODE.log" TTS_MAX_BATCH=64 \
                TTS_BATCH_INVARIANT="$([[ $MODE == invariant ]] && echo 1 || echo 0)"; then
            $B throughput --url http://127.0.0.1:9000 --concurrency 1 16 64 --duration "${INVARIANT_DURATION:-15}" \
                --out "$RES/invariant_cost_$MODE.json"
            stop_server
        fi
    done
    python3 - "$RES" <<'PY'
import json, pathlib, sys
from streamtalk_common.tables import print_table, write_json
res = pathlib.Path(sys.argv[1])
if missing := [m for m in ("default", "invariant") if not (res / f"invariant_cost_{m}.json").exists()]:
    sys.exit(f"invariant: no cost measured in the {', '.join(missing)} mode (its server failed: see above)")
level = {m: {r["concurrency"]: r for r in json.loads((res / f"invariant_cost_{m}.json").read_text())["rows"]}
         for m in ("default", "invariant")}
rows = []
for c, key in ((1, "server_ttfa_ms_p50"), (1, "server_ttfa_ms_p95"), (16, "audio_s_per_s"), (16, "ttfb_ms_p95"),
               (16, "underruns"), (64, "audio_s_per_s"), (64, "ttfb_ms_p95"), (64, "underruns"), (64, "rejected")):
    d, i = level["default"][c][key], level["invariant"][c][key]
    rows.append({"concurrency": c, "measure": key, "default": d, "invariant": i,
                 "change_pct": 100 * (i - d) / d if d else None})
print_table("batch-invariant mode against the default mode (server, TTS_MAX_BATCH=64)", rows)
cost16 = 100 * (1 - level["invariant"][16]["audio_s_per_s"] / level["default"][16]["audio_s_per_s"])
verdict = ("at most 15%: invariant mode qualifies as the GPU default" if cost16 <= 15
           else "more than 15%: the default mode stays the GPU default")
print(f"invariant mode costs {cost16:.1f}% of the audio s/s at concurrency 16, {verdict}")
write_json(res / "invariant_cost.json", {"cost_pct_audio_s_per_s_c16": cost16, "verdict": verdict, "rows": rows})
PY
fi
if has batch; then
    step "batch: concurrency ladder and open loop against the server"
    if start_server "$OUT_DIR/server.log"; then
        $B throughput --url http://127.0.0.1:9000 --concurrency ${BATCH_LADDER:-1 4 16 64 128 256} \
            --duration "${BATCH_DURATION:-30}" --out "$RES/batch.json"
        $B throughput --url http://127.0.0.1:9000 --rate ${BATCH_RATES:-2 5 10} \
            --duration "${BATCH_DURATION:-30}" --out "$RES/open_loop.json"
        curl -s http://127.0.0.1:9000/metrics | grep '^tts_engine' >"$OUT_DIR/engine_metrics.txt"
        stop_server
        # the worker's turns longer than a frame, with where their time went
        grep -h "slow worker turn" "$OUT_DIR/server.log" >"$OUT_DIR/slow_turns.txt" || true
    fi
fi
if has compiled; then
    # the compile cache lives in the cache root: a fresh one makes the first compiled start cold
    COMPILE_HOME="$STREAMTALK_HOME/compile-bench"
    rm -rf "$COMPILE_HOME"
    E2E=(e2e --model-dir "$CK" --lengths medium --repeats 3)
    step "start-up without compile (the reference for the warm start)"
    (unset TORCHINDUCTOR_CACHE_DIR TRITON_CACHE_DIR; $B "${E2E[@]}" --out "$RES/startup_uncompiled.json")
    step "start-up with TTS_COMPILE=1, empty compile cache (cold)"
    (unset TORCHINDUCTOR_CACHE_DIR TRITON_CACHE_DIR; STREAMTALK_HOME="$COMPILE_HOME" $B "${E2E[@]}" --compile \
        --out "$RES/startup_cold.json")
    step "start-up with TTS_COMPILE=1, the cache of the cold start (warm)"
    (unset TORCHINDUCTOR_CACHE_DIR TRITON_CACHE_DIR; STREAMTALK_HOME="$COMPILE_HOME" $B "${E2E[@]}" --compile \
        --out "$RES/startup_warm.json")
    python3 - "$RES" <<'PY'
import json, pathlib, sys
from streamtalk_common.tables import print_table
res = pathlib.Path(sys.argv[1])
if missing := [n for n in ("uncompiled", "cold", "warm") if not (res / f"startup_{n}.json").exists()]:
    sys.exit(f"compiled: no result of the {', '.join(missing)} start (it failed: see above)")
runs = {name: json.loads((res / f"startup_{name}.json").read_text()) for name in ("uncompiled", "cold", "warm")}
rows = []
for name, run in runs.items():
    phases, cache, e2e = run["startup"], run["startup"]["compile"] or {}, run["rows"][0]
    rows.append({"start": name, **{k: v for k, v in phases.items() if k != "compile"},
                 "graphs": cache.get("graphs", 0), "cache_hits": cache.get("fx_graph_cache_hits", 0),
                 "cache_misses": cache.get("fx_graph_cache_misses", 0), "ttfa_ms_p50": e2e["ttfa_ms_p50"],
                 "rtf_p50": e2e["rtf_p50"]})
print_table("start-up per phase (s) and e2e, medium replies", rows)
cold, warm, plain = (runs[n]["startup"]["total_s"] for n in ("cold", "warm", "uncompiled"))
print(f"targets: cold start {cold:.1f} s (<= 120: {'met' if cold <= 120 else 'NOT met'}); warm start {warm:.1f} s "
      f"<= uncompiled {plain:.1f} s + 10: {'met' if warm <= plain + 10 else 'NOT met'}")
PY
fi
if has regression; then
    step "TTS regression: fast mode, golden GPU configuration"
    GOLDEN_GPU="$(python3 -c 'import torch; from tools.tts_regression.suite import baseline_dir_for
print(baseline_dir_for({"device": "cuda", "card": torch.cuda.get_device_name(0)}))')"
    if [[ ! -f "$GOLDEN_GPU/baseline.json" ]]; then
        echo "no baseline for this card at $GOLDEN_GPU yet: creating it (full mode); it is packed into" \
            "$OUT_DIR/$(basename "$GOLDEN_GPU").tar: read its README.md, then commit it as $GOLDEN_GPU"
        python3 -m tools.tts_regression --mode full --profile gpu --update-baseline --out "$OUT_DIR/tts_regression"
        tar -C "$(dirname "$GOLDEN_GPU")" -cf "$OUT_DIR/$(basename "$GOLDEN_GPU").tar" "$(basename "$GOLDEN_GPU")"
    fi
    python3 -m tools.tts_regression --mode fast --profile gpu --out "$OUT_DIR/tts_regression"
    cp "$OUT_DIR/tts_regression/latest/summary.json" "$RES/regression.json"
fi
has peer && { step peer; python3 tools/bench_peer.py --model-dir "$CK" --repeats "${PEER_REPEATS:-3}" --out "$RES/peer.json"; }
step done
python3 - "$RES" "$OUT_DIR/gpu_results.json" <<'PY'
import json, sys, pathlib
parts = {p.stem: json.loads(p.read_text()) for p in sorted(pathlib.Path(sys.argv[1]).glob("*.json"))}
pathlib.Path(sys.argv[2]).write_text(json.dumps(parts, indent=2))
print("merged", list(parts))
PY
