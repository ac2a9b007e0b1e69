#!/usr/bin/env bash
# Production LLM/STT backend: Qwen3-Omni (AWQ 4-bit, compressed-tensors) behind
# vLLM's OpenAI-compatible server on :8000. Needs an NVIDIA GPU and vLLM 0.14
# (`pip install vllm==0.14.*` in its own environment). Not used by CI: without a
# GPU, scripts/start_all.sh runs the local dev backend (python -m tools.omni_dev)
# on the same address instead.
#
#   OMNI_MODEL_PATH  model repository or local directory
#                    (default cpatonn/Qwen3-Omni-30B-A3B-Instruct-AWQ-4bit)
#   OMNI_MODEL       name served to clients (default qwen3-omni); the agent asks for it
#   OMNI_API_KEY     required bearer key, unless "EMPTY" (default)
#   VLLM_HOST/VLLM_PORT  bind address (default 127.0.0.1:8000)
#   VLLM_GPU_MEMORY_UTILIZATION  share of the card vLLM takes (default 0.6)
#   VLLM_BIN         vllm executable (default: vllm on PATH)
#   extra arguments are passed to `vllm serve`
# Defaults and why: scripts/vllm_env.sh. `OMNI_BACKEND=vllm scripts/start_all.sh start`
# runs this script as one of the stack's services.
set -euo pipefail
. "$(dirname "$0")/vllm_env.sh"

MODEL="${OMNI_MODEL_PATH:-cpatonn/Qwen3-Omni-30B-A3B-Instruct-AWQ-4bit}"
VLLM="${VLLM_BIN:-vllm}"

command -v "$VLLM" >/dev/null 2>&1 || { echo "vllm not found (set VLLM_BIN or install vllm 0.14)" >&2; exit 1; }
command -v nvidia-smi >/dev/null 2>&1 || { echo "no NVIDIA GPU driver found; use python -m tools.omni_dev instead" >&2; exit 1; }

args=(
    serve "$MODEL"
    --host "$VLLM_HOST"
    --port "$VLLM_PORT"
    --served-model-name "$VLLM_SERVED_MODEL"
    --max-model-len 2048
    --gpu-memory-utilization "$VLLM_GPU_MEMORY_UTILIZATION"
    --quantization compressed-tensors
    --kv-cache-dtype fp8
)
if [[ -n "${OMNI_API_KEY:-}" && "${OMNI_API_KEY}" != "EMPTY" ]]; then
    args+=(--api-key "$OMNI_API_KEY")
fi

echo "vLLM: $MODEL as '$VLLM_SERVED_MODEL' on http://$VLLM_HOST:$VLLM_PORT/v1" >&2
exec "$VLLM" "${args[@]}" "$@"
