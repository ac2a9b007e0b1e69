#!/usr/bin/env bash
# Run the whole streamtalk stack on this machine.
#
#   scripts/start_all.sh start | stop | restart | status
#
# start: installs what is missing (venv, LiveKit server, npm packages), makes the
# tiny TTS checkpoint and a demo WAV, then starts
#   livekit       LiveKit server            ws://127.0.0.1:${LIVEKIT_PORT:-7880}
#   omni_dev      local Omni-compatible LLM http://127.0.0.1:${OMNI_DEV_PORT:-8000}/v1
#                 (only when OMNI_BASE_URL is unset or points at that address)
#   token_server  token API + web client    http://127.0.0.1:${TOKEN_SERVER_PORT:-3000}
# each in its own process group, with pid files and logs in $STREAMTALK_OUTPUT/run/.
# stop: SIGTERM each group, SIGKILL after a grace period, and verify it is gone.
#
# Environment (defaults): LIVEKIT_PORT 7880, LIVEKIT_UDP_PORT 7882, LIVEKIT_NODE_IP
# 127.0.0.1, LIVEKIT_BIND 127.0.0.1, LIVEKIT_API_KEY/SECRET (both or neither; by default the
# keys generated on first start into LIVEKIT_KEY_FILE $STREAMTALK_HOME/livekit-keys.yaml),
# TOKEN_SERVER_HOST 127.0.0.1 (another address needs TOKEN_ACCESS_KEY or TOKEN_ALLOW_OPEN=1;
# the token server's TOKEN_* settings pass through), TOKEN_SERVER_PORT 3000, OMNI_BASE_URL, OMNI_DEV_PORT 8000,
# STREAMTALK_SKIP_INSTALL=1 (skip install steps), STREAMTALK_SKIP_TTS_DEMO=1.
. "$(dirname "$0")/common.sh"
. "$REPO_ROOT/scripts/livekit_keys.sh"
cd "$REPO_ROOT"

RUN_DIR="$STREAMTALK_OUTPUT/run"
STOP_GRACE_S="${STOP_GRACE_S:-10}"

LIVEKIT_PORT="${LIVEKIT_PORT:-7880}"
LIVEKIT_UDP_PORT="${LIVEKIT_UDP_PORT:-7882}"
LIVEKIT_NODE_IP="${LIVEKIT_NODE_IP:-127.0.0.1}"
LIVEKIT_BIND="${LIVEKIT_BIND:-127.0.0.1}"
LIVEKIT_BIN="${LIVEKIT_SERVER_BIN:-$STREAMTALK_HOME/bin/server}"
LIVEKIT_CONFIG="${LIVEKIT_CONFIG_FILE:-$REPO_ROOT/scripts/livekit-dev.yaml}"
export LIVEKIT_URL="${LIVEKIT_URL:-ws://127.0.0.1:$LIVEKIT_PORT}"
export TOKEN_SERVER_HOST="${TOKEN_SERVER_HOST:-127.0.0.1}"
export TOKEN_SERVER_PORT="${TOKEN_SERVER_PORT:-3000}"
OMNI_DEV_PORT="${OMNI_DEV_PORT:-8000}"
OMNI_DEV_URL="http://127.0.0.1:$OMNI_DEV_PORT/v1"
TTS_CHECKPOINT="${TTS_DEEP_STREAM_MODEL_DIR:-$STREAMTALK_HOME/checkpoints/tiny}"

SERVICES=(livekit omni_dev token_server agent)

# ------------------------------------------------------------------ helpers

want_omni_dev() {
    local url="${OMNI_BASE_URL:-}"
    url="${url%/}"
    [[ -z "$url" || "$url" == "$OMNI_DEV_URL" || "$url" == "http://localhost:$OMNI_DEV_PORT/v1" ]]
}

pid_of() {  # service -> pid from its pid file, or nothing
    local f="$RUN_DIR/$1.pid"
    [[ -f "$f" ]] && cat "$f"
}

group_members() {  # pgid -> pids of live processes in that process group
    local pgid="$1" f line rest
    for f in /proc/[0-9]*/stat; do
        read -r line 2>/dev/null <"$f" || continue
        rest="${line##*) }"
        # fields after "(comm) ": state ppid pgrp ...
        set -- $rest
        if [[ "${3:-}" == "$pgid" && "$1" != "Z" ]]; then
            f="${f#/proc/}"
            echo "${f%/stat}"
        fi
    done
}

is_running() {  # service -> 0 when its process group has live members
    local pid
    pid="$(pid_of "$1")" || return 1
    [[ -n "$pid" && -n "$(group_members "$pid")" ]]
}

port_taken() {  # proto host port -> 0 when something already holds it
    "$PY" - "$1" "$2" "$3" <<'PYEOF'
import socket, sys
proto, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
kind = socket.SOCK_DGRAM if proto == "udp" else socket.SOCK_STREAM
s = socket.socket(socket.AF_INET, kind)
if kind == socket.SOCK_STREAM:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind((host, port))
except OSError:
    sys.exit(0)
finally:
    s.close()
sys.exit(1)
PYEOF
}

require_port() {  # service proto host port env-name
    if port_taken "$2" "$3" "$4"; then
        local who=""
        command -v ss >/dev/null 2>&1 && who="$(ss -H -lnp "( sport = :$4 )" 2>/dev/null | head -3)"
        die "$1: $2 port $3:$4 is already taken${who:+ by:
$who}
  stop whatever holds it (a previous run? try: $0 stop), or choose another port with $5=..."
    fi
}

start_service() {  # name health-url timeout-s cmd...
    local name="$1" url="$2" timeout="$3"
    shift 3
    if is_running "$name"; then
        log "$name already running (pid $(pid_of "$name"))"
        return 0
    fi
    local logf="$RUN_DIR/$name.log"
    log "starting $name (log $logf)"
    # setsid: the service leads its own process group, so stop can end all of it
    setsid "$@" >>"$logf" 2>&1 </dev/null &
    local pid=$!
    echo "$pid" >"$RUN_DIR/$name.pid"
    local deadline=$((SECONDS + timeout))
    while ((SECONDS < deadline)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 30 "$logf" >&2 || true
            rm -f "$RUN_DIR/$name.pid"
            die "$name exited during start-up; see $logf"
        fi
        if curl -fsS -m 2 "$url" >/dev/null 2>&1; then
            log "$name healthy at $url"
            return 0
        fi
        sleep 0.3
    done
    tail -n 30 "$logf" >&2 || true
    die "$name not healthy at $url after ${timeout}s; see $logf"
}

stop_service() {  # name
    local name="$1" pid
    pid="$(pid_of "$name")" || true
    if [[ -z "$pid" ]]; then
        return 0
    fi
    if [[ -n "$(group_members "$pid")" ]]; then
        log "stopping $name (process group $pid)"
        kill -TERM -- "-$pid" 2>/dev/null || true
        local deadline=$((SECONDS + STOP_GRACE_S)) second=$((SECONDS + 2))
        while ((SECONDS < deadline)) && [[ -n "$(group_members "$pid")" ]]; do
            if ((second > 0 && SECONDS >= second)); then
                # a second SIGTERM makes LiveKit stop waiting for participants to leave
                kill -TERM -- "-$pid" 2>/dev/null || true
                second=0
            fi
            sleep 0.2
        done
        if [[ -n "$(group_members "$pid")" ]]; then
            log "$name still alive after ${STOP_GRACE_S}s: SIGKILL"
            kill -KILL -- "-$pid" 2>/dev/null || true
            sleep 0.5
        fi
        local left
        left="$(group_members "$pid" | tr '\n' ' ')"
        if [[ -n "$left" ]]; then
            die "$name: processes $left survived SIGKILL"
        fi
        log "$name stopped"
    fi
    rm -f "$RUN_DIR/$name.pid"
}

# ------------------------------------------------------------------ install

install_missing() {
    if [[ "${STREAMTALK_SKIP_INSTALL:-0}" == "1" ]]; then
        log "STREAMTALK_SKIP_INSTALL=1: not checking installs"
        return 0
    fi
    # system packages first (they install only what is missing, and need root)
    bash "$REPO_ROOT/scripts/install_system_deps.sh" \
        || log "WARNING: could not install system packages; the web page needs npm for livekit-client"
    bash "$REPO_ROOT/scripts/setup_venv.sh"
    bash "$REPO_ROOT/scripts/install_livekit_server.sh"
    if command -v npm >/dev/null 2>&1; then
        bash "$REPO_ROOT/scripts/install_node_deps.sh"
    fi
}

tts_demo() {
    if [[ ! -f "$REPO_ROOT/tts_engine/__main__.py" ]]; then
        return 0
    fi
    if [[ -n "${TTS_DEEP_STREAM_MODEL_DIR:-}" ]]; then
        [[ -f "$TTS_CHECKPOINT/config.json" ]] || die "no checkpoint at TTS_DEEP_STREAM_MODEL_DIR=$TTS_CHECKPOINT"
    else
        # The embedded default: the tiny random checkpoint, rewritten when its writer changed.
        "$PY" -m tts_engine make-checkpoint --preset tiny --reuse "$TTS_CHECKPOINT" >/dev/null \
            || die "could not write the tiny TTS checkpoint to $TTS_CHECKPOINT"
    fi
    [[ "${STREAMTALK_SKIP_TTS_DEMO:-0}" == "1" ]] && return 0
    local demo="$STREAMTALK_OUTPUT/demo.wav"
    if [[ -f "$demo" && "$demo" -nt "$TTS_CHECKPOINT/config.json" ]]; then
        log "demo WAV present: $demo"
        return 0
    fi
    log "synthesizing $demo"
    mkdir -p "$STREAMTALK_OUTPUT"
    "$PY" -m tts_engine synthesize --model-dir "$TTS_CHECKPOINT" \
        --text "Hello from streamtalk. This is the embedded speech engine." \
        --speaker serena --out "$demo" \
        || log "WARNING: demo synthesis failed (see above); the stack still starts"
}

# ------------------------------------------------------------------ commands

cmd_start() {
    mkdir -p "$RUN_DIR"
    install_missing
    [[ -x "$LIVEKIT_BIN" ]] || die "LiveKit server missing at $LIVEKIT_BIN: run scripts/install_livekit_server.sh"
    tts_demo
    load_livekit_keys

    if ! is_running livekit; then
        require_port livekit tcp "$LIVEKIT_BIND" "$LIVEKIT_PORT" LIVEKIT_PORT
        # media binds the node IP's interface; a public node IP may be NAT-ed, so test all
        local udp_host=0.0.0.0
        [[ "$LIVEKIT_NODE_IP" == 127.* ]] && udp_host=127.0.0.1
        require_port livekit udp "$udp_host" "$LIVEKIT_UDP_PORT" LIVEKIT_UDP_PORT
    fi
    start_service livekit "http://127.0.0.1:$LIVEKIT_PORT/" 30 \
        "$LIVEKIT_BIN" --config "$LIVEKIT_CONFIG" --bind "$LIVEKIT_BIND" \
        --node-ip "$LIVEKIT_NODE_IP" --port "$LIVEKIT_PORT" --udp-port "$LIVEKIT_UDP_PORT" \
        --key-file "$LIVEKIT_SERVER_KEY_FILE"

    if want_omni_dev; then
        export OMNI_BASE_URL="$OMNI_DEV_URL"
        export OMNI_MODEL="${OMNI_MODEL:-qwen3-omni-dev}"  # the name the dev backend serves
        is_running omni_dev || require_port omni_dev tcp 127.0.0.1 "$OMNI_DEV_PORT" OMNI_DEV_PORT
        start_service omni_dev "http://127.0.0.1:$OMNI_DEV_PORT/health" 180 \
            "$PY" -m tools.omni_dev --host 127.0.0.1 --port "$OMNI_DEV_PORT"
    else
        log "using the Omni backend at $OMNI_BASE_URL (local dev backend not started)"
        curl -fsS -m 5 "${OMNI_BASE_URL%/}/models" >/dev/null 2>&1 \
            || log "WARNING: $OMNI_BASE_URL/models does not answer yet"
    fi

    is_running token_server \
        || require_port token_server tcp "$TOKEN_SERVER_HOST" "$TOKEN_SERVER_PORT" TOKEN_SERVER_PORT
    start_service token_server "http://$TOKEN_SERVER_HOST:$TOKEN_SERVER_PORT/healthz" 30 \
        "$PY" -m token_server --host "$TOKEN_SERVER_HOST" --port "$TOKEN_SERVER_PORT"

    # ---------------------------------------------------------------- AGENT WORKER
    # Registers as $LIVEKIT_AGENT_NAME against $LIVEKIT_URL and talks to $OMNI_BASE_URL.
    # Its health endpoint answers once the TTS engine and VAD are loaded and warm.
    export AGENT_HTTP_PORT="${AGENT_HTTP_PORT:-8081}"
    is_running agent || require_port agent tcp 127.0.0.1 "$AGENT_HTTP_PORT" AGENT_HTTP_PORT
    start_service agent "http://127.0.0.1:$AGENT_HTTP_PORT/" 180 "$PY" -m agent start

    log "stack is up"
    echo
    echo "  web client:   http://$TOKEN_SERVER_HOST:$TOKEN_SERVER_PORT/"
    echo "  LiveKit:      $LIVEKIT_URL   (API key $LIVEKIT_API_KEY, keys in $LIVEKIT_SERVER_KEY_FILE)"
    echo "  Omni backend: ${OMNI_BASE_URL}"
    echo "  logs:         $RUN_DIR/"
    echo
}

cmd_stop() {
    local i
    # reverse order: clients of a service stop before it
    for ((i = ${#SERVICES[@]} - 1; i >= 0; i--)); do
        stop_service "${SERVICES[$i]}"
    done
    log "all services stopped"
}

health_url() {
    case "$1" in
        livekit) echo "http://127.0.0.1:$LIVEKIT_PORT/" ;;
        omni_dev) echo "http://127.0.0.1:$OMNI_DEV_PORT/health" ;;
        token_server) echo "http://$TOKEN_SERVER_HOST:$TOKEN_SERVER_PORT/healthz" ;;
        agent) echo "http://127.0.0.1:${AGENT_HTTP_PORT:-8081}/" ;;
    esac
}

# Whether LiveKit brings the agent into a room now: the worker's health route says OK
# while it is not registered, so a dispatch into a throwaway room is the source of truth.
agent_probe() {
    (load_livekit_keys >/dev/null && "$PY" -m token_server.agent_probe --timeout "${STATUS_PROBE_TIMEOUT_S:-10}") 2>&1
}

# Whether LiveKit is draining: after one SIGTERM it waits for its participants to leave,
# then exits, and meanwhile its health route still says OK. Its goroutine dump (served in
# development mode, scripts/livekit-dev.yaml) then shows the server's Stop under way.
# Prints "draining", "serving", or "unknown" (no dump: development mode is off).
livekit_drain_state() {
    local dump
    if ! dump="$(curl -fsS -m 5 "http://127.0.0.1:$LIVEKIT_PORT/debug/goroutine" 2>/dev/null)"; then
        echo unknown
    elif [[ "$dump" == *'(*LivekitServer).Stop('* ]]; then
        echo draining
    else
        echo serving
    fi
}

cmd_status() {
    local name pid url state probe rc=0
    for name in "${SERVICES[@]}"; do
        pid="$(pid_of "$name")" || true
        url="$(health_url "$name")"
        if is_running "$name"; then
            if ! curl -fsS -m 2 "$url" >/dev/null 2>&1; then
                state="running (pid $pid), NOT answering at $url"
                rc=1
            elif [[ "$name" == livekit ]]; then
                case "$(livekit_drain_state)" in
                    draining)
                        state="running (pid $pid), answering at $url but DRAINING: it exits once its participants leave"
                        rc=1
                        ;;
                    unknown) state="running (pid $pid), healthy at $url (drain state unknown: /debug/goroutine needs development mode)" ;;
                    *) state="running (pid $pid), healthy at $url" ;;
                esac
            elif [[ "$name" == agent ]] && ! probe="$(agent_probe)"; then
                state="running (pid $pid), answering at $url but NOT serving rooms: ${probe##*$'\n'}"
                rc=1
            elif [[ "$name" == agent ]]; then
                state="running (pid $pid), healthy at $url; $probe"
            else
                state="running (pid $pid), healthy at $url"
            fi
        elif [[ -n "$pid" ]]; then
            state="dead (stale pid file $RUN_DIR/$name.pid, log $RUN_DIR/$name.log)"
            rc=1
        else
            state="stopped"
        fi
        printf '%-13s %s\n' "$name" "$state"
    done
    return $rc
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    restart) cmd_stop && cmd_start ;;
    status) cmd_status ;;
    *)
        echo "usage: $0 {start|stop|restart|status}" >&2
        exit 2
        ;;
esac
