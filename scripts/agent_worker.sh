#!/usr/bin/env bash
# One agent worker of the stack: scripts/agent_worker.sh INDEX (1..AGENT_WORKERS).
#
# Gives worker INDEX its name (AGENT_WORKER_NAME: agent, or agent-INDEX with several),
# its health and metrics ports, its LiveKit node (with LIVEKIT_NODES > 1) and its GPU
# (CUDA_VISIBLE_DEVICES, round-robin over the GPUs there are; none on a CPU box), then
# runs `python -m agent start`. start_all.sh and supervisord both start workers through
# it (scripts/stack_layout.sh has the layout). Needs LIVEKIT_API_KEY/SECRET in its
# environment (scripts/livekit_keys.sh).
. "$(dirname "$0")/common.sh"
. "$REPO_ROOT/scripts/stack_layout.sh"
cd "$REPO_ROOT"

check_layout
index="$(layout_index "$0" "${1:-}" AGENT_WORKERS "$AGENT_WORKERS")" || exit 1

export AGENT_WORKER_NAME="$(agent_service "$index")"
export AGENT_HTTP_PORT="$(agent_http_port "$index")" AGENT_METRICS_PORT="$(agent_metrics_port "$index")"
((LIVEKIT_NODES == 1)) || export LIVEKIT_URL="$(livekit_node_url "$(agent_node "$index")")"
gpu="$("$PY" -m streamtalk_common.gpu_assignment "$AGENT_WORKERS" "$index")" \
    || die "$AGENT_WORKER_NAME: cannot tell which GPU it gets (above)"
[[ -z "$gpu" ]] || export CUDA_VISIBLE_DEVICES="$gpu"
log "$AGENT_WORKER_NAME: LiveKit ${LIVEKIT_URL:-ws://127.0.0.1:7880}, ${gpu:+GPU $gpu}${gpu:-no GPU (CPU)}, health :$AGENT_HTTP_PORT, metrics :$AGENT_METRICS_PORT"
exec "$PY" -m agent start
