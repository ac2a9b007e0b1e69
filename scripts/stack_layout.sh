# The stack's repeated services, their names and ports, for start_all.sh's port and health
# checks: a shell copy (start_all.sh checks the layout before the venv is there) of the
# `Layout` of streamtalk_common/stack.py, which describes the services and launches them
# (scripts/agent_worker.sh, livekit_node.sh, redis_server.sh); tests/unit/test_stack.py
# compares the two, so they cannot drift.
#
#   AGENT_WORKERS=N  agent workers: `agent` when N is 1, else agent-1 .. agent-N; worker i
#                    answers health on AGENT_HTTP_PORT+i-1 and metrics on
#                    AGENT_METRICS_PORT+i-1
#   LIVEKIT_NODES=M  LiveKit nodes: `livekit` when M is 1, else livekit-1 .. livekit-M and
#                    `redis` (REDIS_PORT, loopback) that they share; node i listens on
#                    LIVEKIT_PORT+10(i-1) (signalling) and LIVEKIT_UDP_PORT+10(i-1) (media)
declare -F die >/dev/null || . "$(dirname "${BASH_SOURCE[0]}")/common.sh"

AGENT_WORKERS="${AGENT_WORKERS:-1}"
LIVEKIT_NODES="${LIVEKIT_NODES:-1}"
LIVEKIT_PORT="${LIVEKIT_PORT:-7880}"
LIVEKIT_UDP_PORT="${LIVEKIT_UDP_PORT:-7882}"
AGENT_HTTP_PORT="${AGENT_HTTP_PORT:-8081}"
AGENT_METRICS_PORT="${AGENT_METRICS_PORT:-8091}"
REDIS_PORT="${REDIS_PORT:-6379}"
RUN_DIR="$STREAMTALK_OUTPUT/run"
NODE_PORT_STEP=10  # node i's ports: the first node's + 10(i-1)
MAX_LIVEKIT_NODES=8
MAX_AGENT_WORKERS=64

check_layout() {
    [[ "$AGENT_WORKERS" =~ ^[1-9][0-9]*$ ]] && ((AGENT_WORKERS <= MAX_AGENT_WORKERS)) \
        || die "AGENT_WORKERS=$AGENT_WORKERS; valid: 1..$MAX_AGENT_WORKERS (one per GPU)"
    [[ "$LIVEKIT_NODES" =~ ^[1-9][0-9]*$ ]] && ((LIVEKIT_NODES <= MAX_LIVEKIT_NODES)) \
        || die "LIVEKIT_NODES=$LIVEKIT_NODES; valid: 1..$MAX_LIVEKIT_NODES"
    local http_last=$((AGENT_HTTP_PORT + AGENT_WORKERS - 1)) metrics_last=$((AGENT_METRICS_PORT + AGENT_WORKERS - 1))
    ((AGENT_METRICS_PORT == 0 || http_last < AGENT_METRICS_PORT || metrics_last < AGENT_HTTP_PORT)) \
        || die "AGENT_WORKERS=$AGENT_WORKERS workers need health ports $AGENT_HTTP_PORT..$http_last and metrics ports $AGENT_METRICS_PORT..$metrics_last, which overlap: move AGENT_METRICS_PORT"
}

agent_service() { ((AGENT_WORKERS == 1)) && echo agent || echo "agent-$1"; }  # INDEX (1-based)
agent_http_port() { echo $((AGENT_HTTP_PORT + $1 - 1)); }
agent_metrics_port() { ((AGENT_METRICS_PORT == 0)) && echo 0 || echo $((AGENT_METRICS_PORT + $1 - 1)); }

livekit_service() { ((LIVEKIT_NODES == 1)) && echo livekit || echo "livekit-$1"; }
livekit_port() { echo $((LIVEKIT_PORT + NODE_PORT_STEP * ($1 - 1))); }
livekit_udp_port() { echo $((LIVEKIT_UDP_PORT + NODE_PORT_STEP * ($1 - 1))); }
livekit_node_url() { echo "ws://127.0.0.1:$(livekit_port "$1")"; }
livekit_urls() { local i; for ((i = 1; i <= LIVEKIT_NODES; i++)); do livekit_node_url "$i"; done | paste -sd,; }  # every node, for the token server

livekit_services() { local i; for ((i = 1; i <= LIVEKIT_NODES; i++)); do livekit_service "$i"; done; }
agent_services() { local i; for ((i = 1; i <= AGENT_WORKERS; i++)); do agent_service "$i"; done; }

index_of() {  # SERVICE -> its 1-based index (agent-3 -> 3; agent, livekit -> 1)
    [[ "$1" == *-[0-9]* ]] && echo "${1##*-}" || echo 1
}

# Redis's password lives in a mode-600 config file of the run (redis-server reads it there,
# LiveKit gets it through REDIS_PASSWORD): it shows on no command line.
REDIS_CONF="$RUN_DIR/redis.conf"
redis_password() { sed -n 's/^requirepass //p' "$REDIS_CONF" 2>/dev/null || true; }  # empty before Redis wrote it
redis_answers() { [[ "$(REDISCLI_AUTH="$(redis_password)" redis-cli -p "$REDIS_PORT" ping 2>/dev/null)" == PONG ]]; }

