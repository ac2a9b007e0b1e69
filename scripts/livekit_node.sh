#!/usr/bin/env bash
# One LiveKit node of the stack: scripts/livekit_node.sh INDEX (1..LIVEKIT_NODES).
#
# Node INDEX listens on LIVEKIT_PORT+10(INDEX-1) for signalling and LIVEKIT_UDP_PORT+10(INDEX-1)
# for media (scripts/stack_layout.sh); with LIVEKIT_NODES > 1 every node joins the Redis of
# scripts/redis_server.sh (waiting up to 15 s for it to answer), so they share rooms and agent
# workers. The keys come from the key file LIVEKIT_SERVER_KEY_FILE (scripts/livekit_keys.sh),
# the same for every node. What it runs, with which arguments: streamtalk_common/stack.py
# (`livekit_node`, `deployed`).
. "$(dirname "$0")/common.sh"
exec "$PY" -m streamtalk_common.stack exec livekit "${1:-}"
