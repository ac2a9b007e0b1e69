#!/usr/bin/env bash
# The Redis that several LiveKit nodes share (LIVEKIT_NODES > 1): loopback only, on
# REDIS_PORT (6379), nothing kept on disk (LiveKit's routing state is rebuilt by the nodes),
# a password of 32 random bytes in a mode-600 config file of the run
# ($STREAMTALK_OUTPUT/run/redis.conf, written once per run dir), so it shows on no command
# line. start_all.sh and supervisord start it through this script. What it runs, with which
# arguments: streamtalk_common/stack.py (`redis`, `deployed`).
. "$(dirname "$0")/common.sh"
exec "$PY" -m streamtalk_common.stack exec redis
