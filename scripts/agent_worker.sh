#!/usr/bin/env bash
# One agent worker of the stack: scripts/agent_worker.sh INDEX (1..AGENT_WORKERS).
#
# Gives worker INDEX its name (AGENT_WORKER_NAME: agent, or agent-INDEX with several),
# its health and metrics ports, its LiveKit node (with LIVEKIT_NODES > 1) and its GPU
# (CUDA_VISIBLE_DEVICES, round-robin over the GPUs there are; none on a CPU box), then
# runs `python -m agent start`. start_all.sh and supervisord both start workers through
# it. Needs LIVEKIT_API_KEY/SECRET in its environment (scripts/livekit_keys.sh). What it
# runs, with which settings: streamtalk_common/stack.py (`agent_worker`, `deployed`).
. "$(dirname "$0")/common.sh"
exec "$PY" -m streamtalk_common.stack exec agent "${1:-}"
