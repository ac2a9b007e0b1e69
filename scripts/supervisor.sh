#!/usr/bin/env bash
# The stack under supervisord (scripts/supervisord.conf): the alternative to start_all.sh
# that restarts a program when it dies.
#
#   scripts/supervisor.sh start          starts supervisord in the background, which starts
#                                        the stack; waits until every program is RUNNING
#   scripts/supervisor.sh shutdown       stops every program, then supervisord; waits for them
#                                        and ends any process of the stack that is left
#   scripts/supervisor.sh CMD [ARGS...]  supervisorctl with the conf: status, restart 'agent:*',
#                                        start/stop/pid/tail NAME, ...
#
# supervisord reads the layout from its environment and cannot default a variable, so this
# fills in the defaults (scripts/stack_layout.sh: AGENT_WORKERS, LIVEKIT_NODES and the ports;
# OMNI_DEV_PORT 8000, TOKEN_SERVER_HOST/PORT 127.0.0.1/3000, TTS_HOST/PORT 127.0.0.1/9000, as
# start_all.sh), checks them and runs supervisord and supervisorctl from the venv. With
# OMNI_BASE_URL set the agent uses that backend and the dev backend is not started. It
# installs nothing (scripts/start_all.sh start, or the install scripts, do). Every process of
# the stack carries STREAMTALK_SERVICE=$STREAMTALK_OUTPUT/run/supervisord in its environment,
# children that left their program's process group included (streamtalk_common/service_procs.py).
. "$(dirname "$0")/common.sh"
STREAMTALK_OUTPUT="$(realpath -m "$STREAMTALK_OUTPUT")"  # supervisord runs from /
. "$REPO_ROOT/scripts/stack_layout.sh"

CONF="$REPO_ROOT/scripts/supervisord.conf"
SUPERVISORD="$VENV/bin/supervisord"
SUPERVISORCTL="$VENV/bin/supervisorctl"
# every program RUNNING or given up (FATAL) by then: the agent's startsecs (10) and 3 retries
START_WAIT_S=90
STOP_WAIT_S=90  # the agent's stopwaitsecs (75: its drain) and a little
STOP_GRACE_S="${STOP_GRACE_S:-10}"  # then, for what is left: SIGTERM, SIGKILL after this

check_layout
[[ -x "$SUPERVISORD" && -x "$SUPERVISORCTL" ]] \
    || die "supervisord missing in the venv $VENV: run scripts/setup_venv.sh (the supervisor extra of pyproject.toml)"
export STREAMTALK_OUTPUT AGENT_WORKERS LIVEKIT_NODES LIVEKIT_PORT LIVEKIT_UDP_PORT REDIS_PORT \
    AGENT_HTTP_PORT AGENT_METRICS_PORT
export LIVEKIT_URL="${LIVEKIT_URL:-$(livekit_node_url 1)}"
if ((LIVEKIT_NODES > 1)); then  # the token server hands out a live one of them
    export LIVEKIT_URLS="$(livekit_urls)" STREAMTALK_REDIS_PROCS=1
else
    export STREAMTALK_REDIS_PROCS=0
fi
export OMNI_DEV_PORT="${OMNI_DEV_PORT:-8000}"
if [[ -z "${OMNI_BASE_URL:-}" ]]; then
    export OMNI_BASE_URL="http://127.0.0.1:$OMNI_DEV_PORT/v1" STREAMTALK_OMNI_DEV_PROCS=1
    export OMNI_MODEL="${OMNI_MODEL:-qwen3-omni-dev}"  # the name the dev backend serves
else
    export STREAMTALK_OMNI_DEV_PROCS=0
fi
export TOKEN_SERVER_HOST="${TOKEN_SERVER_HOST:-127.0.0.1}" TOKEN_SERVER_PORT="${TOKEN_SERVER_PORT:-3000}"
export TTS_HOST="${TTS_HOST:-127.0.0.1}" TTS_PORT="${TTS_PORT:-9000}"

export STREAMTALK_SERVICE="$RUN_DIR/supervisord"

ctl() { "$SUPERVISORCTL" -c "$CONF" "$@"; }

# supervisorctl status; its exit status is not 0 while any program is stopped (tts_server)
status_lines() { ctl status || true; }

# Prints the programs still STARTING or in BACKOFF, or `supervisord` until it answers.
starting() {
    ctl pid >/dev/null 2>&1 || { echo supervisord; return 0; }
    status_lines | awk '$2 == "STARTING" || $2 == "BACKOFF" { print $1 }'
}

cmd_start() {
    if ctl pid >/dev/null 2>&1; then
        log "supervisord already runs (pid $(ctl pid)): $0 status"
        return 0
    fi
    local pids
    pids="$(cd "$RUN_DIR" 2>/dev/null && ls -- *.pid 2>/dev/null | grep -vx supervisord.pid || true)"
    [[ -z "$pids" ]] || die "start_all.sh's services left pid files in $RUN_DIR ($(echo $pids)): run scripts/start_all.sh stop first; the two must not run side by side"
    local livekit_bin="${LIVEKIT_SERVER_BIN:-$STREAMTALK_HOME/bin/server}"
    [[ -x "$livekit_bin" ]] || die "LiveKit server missing at $livekit_bin: run scripts/install_livekit_server.sh"
    mkdir -p "$RUN_DIR"
    log "supervisord: $LIVEKIT_NODES LiveKit node(s), $AGENT_WORKERS agent worker(s), logs in $RUN_DIR/"
    "$SUPERVISORD" -c "$CONF"
    local started=$SECONDS waiting
    while waiting="$(starting)" && [[ -n "$waiting" ]]; do
        ((SECONDS - started < START_WAIT_S)) \
            || die "still starting after ${START_WAIT_S} s: $(echo $waiting); see $RUN_DIR/"
        sleep 0.5
    done
    status_lines
    if status_lines | awk '$2 == "FATAL" || $2 == "EXITED" { bad = 1 } END { exit !bad }'; then
        die "a program did not start (above); see its log in $RUN_DIR/; stop everything: $0 shutdown"
    fi
    log "every program RUNNING after $((SECONDS - started)) s; the agent workers serve rooms once registered (\"registered worker\" in $RUN_DIR/agent-N.log)"
}

cmd_shutdown() {
    local pid
    pid="$(cat "$RUN_DIR/supervisord.pid" 2>/dev/null)" || die "supervisord does not run here (no $RUN_DIR/supervisord.pid)"
    ctl shutdown || true  # it may have gone meanwhile: what it left is still ended below
    local started=$SECONDS
    while [[ -n "$("$PY" -m streamtalk_common.service_procs members "$STREAMTALK_SERVICE" "$pid")" ]] \
        && ((SECONDS - started < STOP_WAIT_S)); do
        sleep 0.3
    done
    "$PY" -m streamtalk_common.service_procs stop "$STREAMTALK_SERVICE" "$pid" --grace "$STOP_GRACE_S" \
        || die "processes of the stack survived SIGKILL (above)"
    log "stack stopped after $((SECONDS - started)) s; nothing of it is left"
}

if [[ "$*" == start ]]; then
    cmd_start
elif [[ "$*" == shutdown ]]; then
    cmd_shutdown
elif (($#)); then
    exec "$SUPERVISORCTL" -c "$CONF" "$@"  # start NAME included
else
    die "usage: $0 start | CMD [ARGS...] (a supervisorctl command: status, restart NAME, shutdown, ...)"
fi
