#!/usr/bin/env bash
# One LiveKit node of the stack: scripts/livekit_node.sh INDEX (1..LIVEKIT_NODES).
#
# Node INDEX listens on LIVEKIT_PORT+10(INDEX-1) for signalling and LIVEKIT_UDP_PORT+10(INDEX-1)
# for media (scripts/stack_layout.sh); with LIVEKIT_NODES > 1 every node joins the Redis of
# scripts/redis_server.sh (waiting up to 15 s for it to answer), so they share rooms and agent
# workers. The keys come from the key file LIVEKIT_SERVER_KEY_FILE (scripts/livekit_keys.sh),
# the same for every node.
. "$(dirname "$0")/common.sh"
. "$REPO_ROOT/scripts/stack_layout.sh"
cd "$REPO_ROOT"

check_layout
index="$(layout_index "$0" "${1:-}" LIVEKIT_NODES "$LIVEKIT_NODES")" || exit 1
[[ -n "${LIVEKIT_SERVER_KEY_FILE:-}" ]] || die "LIVEKIT_SERVER_KEY_FILE is not set: run through scripts/livekit_keys.sh"
REDIS_WAIT_S=15  # supervisord starts Redis beside the nodes; start_all.sh before them
redis=()
if ((LIVEKIT_NODES > 1)); then
    for ((tries = REDIS_WAIT_S * 5; tries > 0; tries--)); do
        redis_answers && break
        sleep 0.2
    done
    ((tries)) || die "Redis does not answer on 127.0.0.1:$REDIS_PORT with the password in $REDIS_CONF after $REDIS_WAIT_S s: start it first (scripts/redis_server.sh)"
    REDIS_PASSWORD="$(redis_password)"
    export REDIS_PASSWORD  # LiveKit reads it from its environment
    redis=(--redis-host "127.0.0.1:$REDIS_PORT")
fi
exec "${LIVEKIT_SERVER_BIN:-$STREAMTALK_HOME/bin/server}" --config "${LIVEKIT_CONFIG_FILE:-$REPO_ROOT/scripts/livekit-dev.yaml}" \
    --bind "${LIVEKIT_BIND:-127.0.0.1}" --node-ip "${LIVEKIT_NODE_IP:-127.0.0.1}" \
    --port "$(livekit_port "$index")" --udp-port "$(livekit_udp_port "$index")" \
    --key-file "$LIVEKIT_SERVER_KEY_FILE" "${redis[@]}"
