#!/usr/bin/env bash
# The Redis that several LiveKit nodes share (LIVEKIT_NODES > 1): loopback only, on
# REDIS_PORT (6379), nothing kept on disk (LiveKit's routing state is rebuilt by the nodes),
# a password of 32 random bytes in a mode-600 config file of the run
# ($STREAMTALK_OUTPUT/run/redis.conf, written once per run dir), so it shows on no command
# line. start_all.sh and supervisord start it through this script.
. "$(dirname "$0")/common.sh"
. "$REPO_ROOT/scripts/stack_layout.sh"

command -v redis-server >/dev/null 2>&1 \
    || die "redis-server missing (several LiveKit nodes share rooms through it): run scripts/install_system_deps.sh, or apt-get install redis-server"
mkdir -p "$RUN_DIR/redis"
if [[ ! -s "$REDIS_CONF" ]]; then
    (
        umask 077
        {
            echo "# Redis of the local streamtalk stack (scripts/redis_server.sh)"
            echo "requirepass $(od -An -vtx1 -N32 /dev/urandom | tr -d ' \n')"
        } >"$REDIS_CONF.new"
    )
    mv -f "$REDIS_CONF.new" "$REDIS_CONF"
fi
exec redis-server "$REDIS_CONF" --bind 127.0.0.1 --port "$REDIS_PORT" --protected-mode yes \
    --save "" --appendonly no --dir "$RUN_DIR/redis" --daemonize no
