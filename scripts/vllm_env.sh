# vLLM's settings with their defaults, shared by scripts/run_llm_server.sh (which starts
# it) and scripts/start_all.sh (which checks the GPU for it and waits on its address).
VLLM_HOST="${VLLM_HOST:-127.0.0.1}"
VLLM_PORT="${VLLM_PORT:-8000}"
# The share of the card's memory vLLM takes at start (it refuses when that much is not
# free). 0.6 leaves room for the TTS engine on the same card (about 27 GiB for the LLM on
# a 48 GiB card); raising it starves the TTS.
VLLM_GPU_MEMORY_UTILIZATION="${VLLM_GPU_MEMORY_UTILIZATION:-0.6}"
VLLM_SERVED_MODEL="${OMNI_MODEL:-qwen3-omni}"
