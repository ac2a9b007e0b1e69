#!/usr/bin/env bash
# Run the whole streamtalk stack on this machine.
#
#   scripts/start_all.sh start | stop | restart | status
#
# start: installs what is missing (venv, LiveKit server, npm packages), makes the
# tiny TTS checkpoint and a demo WAV, then starts
#   livekit       LiveKit server            ws://127.0.0.1:${LIVEKIT_PORT:-7880}
#                 (LIVEKIT_NODES=M: livekit-1 .. livekit-M on ports +10 each, sharing rooms
#                 and workers through `redis` on 127.0.0.1:${REDIS_PORT:-6379};
#                 scripts/livekit_node.sh, scripts/redis_server.sh)
#   vllm          vLLM with Qwen3-Omni      http://127.0.0.1:${VLLM_PORT:-8000}/v1
#                 (OMNI_BACKEND=vllm: scripts/run_llm_server.sh; needs a GPU)
#   omni_dev      local Omni-compatible LLM http://127.0.0.1:${OMNI_DEV_PORT:-8000}/v1
#                 (OMNI_BACKEND=dev, the default while OMNI_BASE_URL is unset or that address)
#   tts_server    standalone TTS HTTP server http://${TTS_HOST:-127.0.0.1}:${TTS_PORT:-9000}
#                 (only with STREAMTALK_TTS_SERVER=1)
#   token_server  token API + web client    http://127.0.0.1:${TOKEN_SERVER_PORT:-3000}
#   agent         the agent worker (AGENT_WORKERS=N: agent-1 .. agent-N, one per GPU;
#                 scripts/agent_worker.sh, scripts/stack_layout.sh); a worker that exits by
#                 itself (recycled: AGENT_RECYCLE_GROWTH_MIB) is started again
#                 (scripts/keep_running.sh), while status says it is not serving
# each in its own process group, with pid files and logs in $STREAMTALK_OUTPUT/run/; what each
# runs, with which arguments: streamtalk_common/stack.py (`python -m streamtalk_common.stack
# show SERVICE [INDEX]` prints it; vLLM: scripts/run_llm_server.sh).
# stop: SIGTERM each service, SIGKILL after a grace period, and verify nothing of it is left
# (children that left the group included: streamtalk_common/service_procs.py).
#
# Environment (defaults): LIVEKIT_PORT 7880, LIVEKIT_UDP_PORT 7882, LIVEKIT_NODE_IP
# 127.0.0.1, LIVEKIT_BIND 127.0.0.1, LIVEKIT_API_KEY/SECRET (both or neither; by default the
# keys generated on first start into LIVEKIT_KEY_FILE $STREAMTALK_HOME/livekit-keys.yaml),
# TOKEN_SERVER_HOST 127.0.0.1 (another address needs TOKEN_ACCESS_KEY or TOKEN_ALLOW_OPEN=1;
# the token server's TOKEN_* settings pass through), TOKEN_SERVER_PORT 3000, OMNI_BACKEND
# (dev | vllm | external), OMNI_BASE_URL, OMNI_DEV_PORT 8000, VLLM_PORT 8000,
# VLLM_GPU_MEMORY_UTILIZATION 0.6, VLLM_START_TIMEOUT_S 900, STREAMTALK_TTS_SERVER=1, TTS_HOST,
# TTS_PORT 9000, TTS_START_TIMEOUT_S 600 (the agent's and the TTS server's engine start-up),
# STREAMTALK_SKIP_INSTALL=1 (skip install steps), STREAMTALK_SKIP_TTS_DEMO=1,
# AGENT_WORKERS 1, AGENT_HTTP_PORT 8081, AGENT_METRICS_PORT 8091 (worker i: +i-1),
# LIVEKIT_NODES 1, REDIS_PORT 6379.
. "$(dirname "$0")/common.sh"
. "$REPO_ROOT/scripts/livekit_keys.sh"
. "$REPO_ROOT/scripts/vllm_env.sh"
. "$REPO_ROOT/scripts/stack_layout.sh"
cd "$REPO_ROOT"
check_layout

STOP_GRACE_S="${STOP_GRACE_S:-10}"
PROGRESS_EVERY_S=10  # a service still loading says so this often

LIVEKIT_NODE_IP="${LIVEKIT_NODE_IP:-127.0.0.1}"
LIVEKIT_BIND="${LIVEKIT_BIND:-127.0.0.1}"
LIVEKIT_BIN="${LIVEKIT_SERVER_BIN:-$STREAMTALK_HOME/bin/server}"
LIVEKIT_CONFIG="${LIVEKIT_CONFIG_FILE:-$REPO_ROOT/scripts/livekit-dev.yaml}"
export LIVEKIT_NODES LIVEKIT_PORT LIVEKIT_UDP_PORT REDIS_PORT AGENT_WORKERS
export LIVEKIT_URL="${LIVEKIT_URL:-ws://127.0.0.1:$LIVEKIT_PORT}"
if ((LIVEKIT_NODES > 1)); then  # the token server hands out a live one of them
    LIVEKIT_URLS="$(livekit_urls)"
    export LIVEKIT_URLS
fi
export TOKEN_SERVER_HOST="${TOKEN_SERVER_HOST:-127.0.0.1}"
export TOKEN_SERVER_PORT="${TOKEN_SERVER_PORT:-3000}"
OMNI_DEV_PORT="${OMNI_DEV_PORT:-8000}"
OMNI_DEV_URL="http://127.0.0.1:$OMNI_DEV_PORT/v1"
VLLM_URL="http://$([[ "$VLLM_HOST" == 0.0.0.0 || "$VLLM_HOST" == :: ]] && echo 127.0.0.1 || echo "$VLLM_HOST"):$VLLM_PORT/v1"
VLLM_START_TIMEOUT_S="${VLLM_START_TIMEOUT_S:-900}"  # loading the weights takes minutes
# The engine warms up every batch bucket, and with compile on (TTS_COMPILE, the CUDA default) an empty compile cache compiles first
TTS_START_TIMEOUT_S="${TTS_START_TIMEOUT_S:-600}"
STREAMTALK_TTS_SERVER="${STREAMTALK_TTS_SERVER:-0}"
TTS_HOST="${TTS_HOST:-127.0.0.1}"  # EngineConfig's defaults
TTS_PORT="${TTS_PORT:-9000}"
TTS_CHECKPOINT="${TTS_DEEP_STREAM_MODEL_DIR:-$STREAMTALK_HOME/checkpoints/tiny}"

VLLM_PROCESS_NAMES='vllm|VLLM|EngineCore'  # what vLLM's processes are called

# ------------------------------------------------------------------ helpers

services() {  # every service of this layout, in start order
    ((LIVEKIT_NODES == 1)) || echo redis
    livekit_services
    printf '%s\n' vllm omni_dev tts_server token_server
    agent_services
}

# Services that left a pid file but are not of this layout (AGENT_WORKERS was changed while
# they ran): stop and status still see them.
stray_services() {
    local f name
    for f in "$RUN_DIR"/*.pid; do
        [[ -e "$f" ]] || continue
        name="$(basename "$f" .pid)"
        services | grep -qxF "$name" || echo "$name"
    done
}

# Which Omni backend serves the agent; sets OMNI_BACKEND. Unset: the dev backend, unless
# OMNI_BASE_URL names another address (then that backend, started elsewhere).
resolve_omni_backend() {
    local url="${OMNI_BASE_URL:-}" wanted
    url="${url%/}"
    case "${OMNI_BACKEND:-}" in
        "")
            OMNI_BACKEND=external
            [[ -z "$url" ]] || same_local_url "$url" "$OMNI_DEV_URL" && OMNI_BACKEND=dev
            ;;
        dev | vllm | external) ;;
        *) die "OMNI_BACKEND=$OMNI_BACKEND; valid: dev (the local dev backend, the default), vllm (scripts/run_llm_server.sh, needs a GPU), external (a backend at OMNI_BASE_URL started elsewhere)" ;;
    esac
    case "$OMNI_BACKEND" in
        dev) wanted="$OMNI_DEV_URL" ;;
        vllm)
            wanted="$VLLM_URL"
            [[ "$VLLM_GPU_MEMORY_UTILIZATION" =~ ^(0?\.[0-9]*[1-9][0-9]*|1(\.0*)?)$ ]] \
                || die "VLLM_GPU_MEMORY_UTILIZATION=$VLLM_GPU_MEMORY_UTILIZATION; valid: a fraction in (0, 1], e.g. 0.6"
            [[ "$VLLM_START_TIMEOUT_S" =~ ^[1-9][0-9]*$ ]] \
                || die "VLLM_START_TIMEOUT_S=$VLLM_START_TIMEOUT_S; valid: whole seconds > 0"
            ;;
        external)
            [[ -n "$url" ]] || die "OMNI_BACKEND=external needs OMNI_BASE_URL (the backend's address, ending in /v1)"
            return 0
            ;;
    esac
    [[ -z "$url" ]] || same_local_url "$url" "$wanted" \
        || die "OMNI_BACKEND=$OMNI_BACKEND serves at $wanted, but OMNI_BASE_URL=$url; leave OMNI_BASE_URL unset, set it to $wanted, or use OMNI_BACKEND=external"
}

same_local_url() {  # url wanted -> 0 when they are the same address (localhost = 127.0.0.1)
    [[ "$1" == "$2" || "${1/localhost/127.0.0.1}" == "$2" ]]
}

enabled() {  # service -> 0 when this configuration runs it
    case "$1" in
        vllm) [[ "$OMNI_BACKEND" == vllm ]] ;;
        omni_dev) [[ "$OMNI_BACKEND" == dev ]] ;;
        tts_server) [[ "$STREAMTALK_TTS_SERVER" == 1 ]] ;;
        *) return 0 ;;  # livekit*, token_server, agent*
    esac
}

pid_of() {  # service -> pid from its pid file, or nothing
    local f="$RUN_DIR/$1.pid"
    [[ -f "$f" ]] && cat "$f"
}

# Every process a service started carries this tag in its environment, children that left
# its process group included.
service_tag() { echo "$RUN_DIR/$1"; }

is_running() {  # service -> 0 when any process of it lives
    local pid
    pid="$(pid_of "$1")" || return 1
    [[ -n "$pid" && -n "$("$PY" -m streamtalk_common.service_procs members "$(service_tag "$1")" "$pid")" ]]
}

answers() {  # service url -> 0 when the url answers; vLLM's /v1 routes want its API key
    if [[ "$2" == redis://* ]]; then  # redis://127.0.0.1:REDIS_PORT
        redis_answers
    elif [[ "$1" == vllm && -n "${OMNI_API_KEY:-}" && "$OMNI_API_KEY" != EMPTY ]]; then
        # through curl's config on stdin: the key shows on no command line
        printf 'header = "Authorization: Bearer %s"\n' "$OMNI_API_KEY" | curl -fsS -m 2 -K - "$2" >/dev/null 2>&1
    else
        curl -fsS -m 2 "$2" >/dev/null 2>&1
    fi
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
    STREAMTALK_SERVICE="$(service_tag "$name")" setsid "$@" >>"$logf" 2>&1 </dev/null &
    local pid=$!
    echo "$pid" >"$RUN_DIR/$name.pid"
    local started=$SECONDS deadline=$((SECONDS + timeout)) note=$((SECONDS + PROGRESS_EVERY_S))
    while ((SECONDS < deadline)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 30 "$logf" >&2 || true
            stop_service "$name"  # what it started may outlive it
            die "$name exited during start-up; see $logf"
        fi
        if answers "$name" "$url"; then
            log "$name healthy at $url"
            return 0
        fi
        if ((SECONDS >= note)); then
            log "$name: waiting for $url, $((SECONDS - started)) s of ${timeout} s; its log says: $(tail -n 1 "$logf" | cut -c1-160)"
            note=$((SECONDS + PROGRESS_EVERY_S))
        fi
        sleep 0.3
    done
    tail -n 30 "$logf" >&2 || true
    stop_service "$name"
    local hint=""
    [[ "$name" == vllm ]] && hint="; vLLM may need longer to load: raise VLLM_START_TIMEOUT_S"
    [[ "$name" == tts_server || "$name" == agent || "$name" == agent-* ]] && hint="; the TTS engine may need longer to start: raise TTS_START_TIMEOUT_S"
    die "$name not healthy at $url after ${timeout}s, stopped it; see $logf$hint"
}

stop_service() {  # name
    local name="$1" pid named=()
    pid="$(pid_of "$name")" || true
    if [[ -z "$pid" ]]; then
        return 0
    fi
    [[ "$name" == vllm ]] && named=(--named "$VLLM_PROCESS_NAMES")
    local said line rc=0
    said="$("$PY" -m streamtalk_common.service_procs stop "$(service_tag "$name")" "$pid" \
        --grace "$STOP_GRACE_S" "${named[@]}" 2>&1)" || rc=$?
    [[ -z "$said" ]] || while IFS= read -r line; do log "$name: $line"; done <<<"$said"
    ((rc == 0)) || die "$name: processes survived SIGKILL (above)"
    [[ -z "$said" ]] || log "$name stopped"
    rm -f "$RUN_DIR/$name.pid"
}

# vLLM takes VLLM_GPU_MEMORY_UTILIZATION of the card at start, and refuses to start when
# that much is not free: say so before minutes of loading, with who holds the memory.
check_vllm_gpu_memory() {
    if ! command -v nvidia-smi >/dev/null 2>&1; then
        log "vllm: nvidia-smi not found, GPU memory not checked"
        return 0
    fi
    local gpu="${CUDA_VISIBLE_DEVICES:-0}" line name total free need apps
    gpu="${gpu%%,*}"  # vLLM runs on the first visible card
    line="$(nvidia-smi -i "$gpu" --query-gpu=name,memory.total,memory.free --format=csv,noheader,nounits 2>&1)" \
        || die "vllm: nvidia-smi cannot read GPU $gpu: $line"
    IFS=, read -r name total free <<<"$line"
    total="${total// /}" free="${free// /}"
    [[ "$total" =~ ^[0-9]+$ && "$free" =~ ^[0-9]+$ ]] || die "vllm: unexpected nvidia-smi answer for GPU $gpu: $line"
    need="$(awk -v u="$VLLM_GPU_MEMORY_UTILIZATION" -v t="$total" 'BEGIN { n = u * t; printf "%d", (n == int(n)) ? n : int(n) + 1 }')"
    if ((free < need)); then
        apps="$(nvidia-smi -i "$gpu" --query-compute-apps=pid,process_name,used_memory --format=csv,noheader 2>/dev/null || true)"
        die "vllm needs $need MiB free on GPU $gpu ($name): VLLM_GPU_MEMORY_UTILIZATION=$VLLM_GPU_MEMORY_UTILIZATION of its $total MiB, but only $free MiB are free${apps:+; in use by:
$apps}
  free the GPU, or lower VLLM_GPU_MEMORY_UTILIZATION (the TTS engine needs TTS_MIN_FREE_GPU_MIB beside it)"
    fi
    log "vllm: GPU $gpu ($name) has $free MiB free; vLLM takes $need MiB"
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
    resolve_omni_backend
    [[ "$TTS_START_TIMEOUT_S" =~ ^[1-9][0-9]*$ ]] || die "TTS_START_TIMEOUT_S=$TTS_START_TIMEOUT_S; valid: whole seconds > 0"
    mkdir -p "$RUN_DIR"
    install_missing
    [[ -x "$LIVEKIT_BIN" ]] || die "LiveKit server missing at $LIVEKIT_BIN: run scripts/install_livekit_server.sh"
    tts_demo
    load_livekit_keys

    if ((LIVEKIT_NODES > 1)); then  # the nodes share rooms and workers through it
        is_running redis || require_port redis tcp 127.0.0.1 "$REDIS_PORT" REDIS_PORT
        start_service redis "$(health_url redis)" 30 bash "$REPO_ROOT/scripts/redis_server.sh"
    fi
    local node name
    for ((node = 1; node <= LIVEKIT_NODES; node++)); do
        name="$(livekit_service "$node")"
        if ! is_running "$name"; then
            require_port "$name" tcp "$LIVEKIT_BIND" "$(livekit_port "$node")" LIVEKIT_PORT
            # media binds the node IP's interface; a public node IP may be NAT-ed, so test all
            local udp_host=0.0.0.0
            [[ "$LIVEKIT_NODE_IP" == 127.* ]] && udp_host=127.0.0.1
            require_port "$name" udp "$udp_host" "$(livekit_udp_port "$node")" LIVEKIT_UDP_PORT
        fi
        LIVEKIT_SERVER_BIN="$LIVEKIT_BIN" LIVEKIT_CONFIG_FILE="$LIVEKIT_CONFIG" LIVEKIT_BIND="$LIVEKIT_BIND" \
            LIVEKIT_NODE_IP="$LIVEKIT_NODE_IP" start_service "$name" "$(health_url "$name")" 30 \
            bash "$REPO_ROOT/scripts/livekit_node.sh" "$node"
    done

    case "$OMNI_BACKEND" in
        dev)
            export OMNI_BASE_URL="$OMNI_DEV_URL"
            export OMNI_MODEL="${OMNI_MODEL:-qwen3-omni-dev}"  # the name the dev backend serves
            is_running omni_dev || require_port omni_dev tcp 127.0.0.1 "$OMNI_DEV_PORT" OMNI_DEV_PORT
            OMNI_DEV_PORT="$OMNI_DEV_PORT" start_service omni_dev "$(health_url omni_dev)" 180 \
                "$PY" -m streamtalk_common.stack exec omni_dev
            ;;
        vllm)
            export OMNI_BASE_URL="$VLLM_URL" OMNI_MODEL="$VLLM_SERVED_MODEL"
            if ! is_running vllm; then
                require_port vllm tcp "$VLLM_HOST" "$VLLM_PORT" VLLM_PORT
                check_vllm_gpu_memory
            fi
            start_service vllm "$(health_url vllm)" "$VLLM_START_TIMEOUT_S" \
                bash "$REPO_ROOT/scripts/run_llm_server.sh"
            ;;
        external)
            log "using the Omni backend at $OMNI_BASE_URL (local dev backend not started)"
            curl -fsS -m 5 "${OMNI_BASE_URL%/}/models" >/dev/null 2>&1 \
                || log "WARNING: $OMNI_BASE_URL/models does not answer yet"
            ;;
    esac

    if enabled tts_server; then
        is_running tts_server || require_port tts_server tcp "$TTS_HOST" "$TTS_PORT" TTS_PORT
        TTS_DEEP_STREAM_MODEL_DIR="$TTS_CHECKPOINT" TTS_HOST="$TTS_HOST" TTS_PORT="$TTS_PORT" \
            start_service tts_server "$(health_url tts_server)" "$TTS_START_TIMEOUT_S" \
            "$PY" -m streamtalk_common.stack exec tts_server
    fi

    is_running token_server \
        || require_port token_server tcp "$TOKEN_SERVER_HOST" "$TOKEN_SERVER_PORT" TOKEN_SERVER_PORT
    start_service token_server "$(health_url token_server)" 30 \
        "$PY" -m streamtalk_common.stack exec token_server

    # ---------------------------------------------------------------- AGENT WORKERS
    # Each registers as $LIVEKIT_AGENT_NAME with LiveKit and talks to $OMNI_BASE_URL, on its
    # own GPU where there are GPUs (scripts/agent_worker.sh). Its health endpoint answers
    # once its TTS engine and VAD are loaded and warm. keep_running.sh starts it again when
    # it exits by itself (a recycle, or a crash after it served).
    export AGENT_WORKERS AGENT_HTTP_PORT AGENT_METRICS_PORT
    local i
    for ((i = 1; i <= AGENT_WORKERS; i++)); do
        name="$(agent_service "$i")"
        if ! is_running "$name"; then
            require_port "$name" tcp 127.0.0.1 "$(agent_http_port "$i")" AGENT_HTTP_PORT
            ((AGENT_METRICS_PORT == 0)) \
                || require_port "$name" tcp 127.0.0.1 "$(agent_metrics_port "$i")" AGENT_METRICS_PORT
        fi
        start_service "$name" "$(health_url "$name")" "$TTS_START_TIMEOUT_S" \
            bash "$REPO_ROOT/scripts/keep_running.sh" "$name" \
            bash "$REPO_ROOT/scripts/agent_worker.sh" "$i"
    done

    log "stack is up"
    echo
    echo "  web client:   http://$TOKEN_SERVER_HOST:$TOKEN_SERVER_PORT/"
    echo "  LiveKit:      $LIVEKIT_URL   (API key $LIVEKIT_API_KEY, keys in $LIVEKIT_SERVER_KEY_FILE)"
    echo "  Omni backend: ${OMNI_BASE_URL}   ($OMNI_BACKEND)"
    enabled tts_server && echo "  TTS server:   http://$TTS_HOST:$TTS_PORT/"
    echo "  logs:         $RUN_DIR/"
    echo
}

cmd_stop() {
    local name
    # strays first (workers of an earlier layout), then reverse order: clients before servers
    for name in $(stray_services) $(services | tac); do
        stop_service "$name"
    done
    log "all services stopped"
}

health_url() {
    case "$1" in
        redis) echo "redis://127.0.0.1:$REDIS_PORT" ;;
        livekit*) echo "http://127.0.0.1:$(livekit_port "$(index_of "$1")")/" ;;
        vllm) echo "$VLLM_URL/models" ;;
        omni_dev) echo "http://127.0.0.1:$OMNI_DEV_PORT/health" ;;
        tts_server) echo "http://$TTS_HOST:$TTS_PORT/readyz" ;;
        token_server) echo "http://$TOKEN_SERVER_HOST:$TOKEN_SERVER_PORT/healthz" ;;
        agent*) echo "http://127.0.0.1:$(agent_http_port "$(index_of "$1")")/" ;;
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
livekit_drain_state() {  # service
    local dump
    if ! dump="$(curl -fsS -m 5 "http://127.0.0.1:$(livekit_port "$(index_of "$1")")/debug/goroutine" 2>/dev/null)"; then
        echo unknown
    elif [[ "$dump" == *'(*LivekitServer).Stop('* ]]; then
        echo draining
    else
        echo serving
    fi
}

# A worker's load and its parts (its /metrics) and its GPU (the environment of its worker
# process: the pid is keep_running.sh's), for status.
worker_note() {  # name pid
    local port gpu="" note="" metrics member
    port="$(agent_metrics_port "$(index_of "$1")")"
    if ((port)) && metrics="$(curl -fsS -m 2 "http://127.0.0.1:$port/metrics" 2>/dev/null)"; then
        note="$(awk '/^streamtalk_agent_/ { v[$1] = $2 } END {
            printf "load %.2f (%d of %d rooms, %d of %d engine streams), ", v["streamtalk_agent_load"],
                v["streamtalk_agent_rooms"], v["streamtalk_agent_max_rooms"],
                v["streamtalk_agent_engine_streams"], v["streamtalk_agent_engine_capacity"] }' <<<"$metrics")"
    fi
    for member in $("$PY" -m streamtalk_common.service_procs members "$(service_tag "$1")" "$2"); do
        gpu="$(tr '\0' '\n' <"/proc/$member/environ" 2>/dev/null | sed -n 's/^CUDA_VISIBLE_DEVICES=//p')"
        [[ -z "$gpu" ]] || break
    done
    echo "${note}${gpu:+GPU $gpu}${gpu:-CPU}"
}

cmd_status() {
    local name pid url state probe rc=0 workers=0
    resolve_omni_backend
    for name in $(services) $(stray_services); do
        pid="$(pid_of "$name")" || true
        # a service this configuration leaves out is listed only when it left a pid file
        enabled "$name" || [[ -n "$pid" ]] || continue
        url="$(health_url "$name")"
        if is_running "$name"; then
            if ! answers "$name" "$url"; then
                state="running (pid $pid), NOT answering at $url"
                rc=1
            elif [[ "$name" == livekit* ]]; then
                case "$(livekit_drain_state "$name")" in
                    draining)
                        state="running (pid $pid), answering at $url but DRAINING: it exits once its participants leave"
                        rc=1
                        ;;
                    unknown) state="running (pid $pid), healthy at $url (drain state unknown: /debug/goroutine needs development mode)" ;;
                    *) state="running (pid $pid), healthy at $url" ;;
                esac
            elif [[ "$name" == agent-* ]]; then  # one of several: the probe follows them all
                state="running (pid $pid), healthy at $url; $(worker_note "$name" "$pid")"
                workers=$((workers + 1))
            elif [[ "$name" == agent ]] && ! probe="$(agent_probe)"; then
                state="running (pid $pid), answering at $url but NOT serving rooms: ${probe##*$'\n'}"
                rc=1
            elif [[ "$name" == agent ]]; then
                state="running (pid $pid), healthy at $url; $(worker_note "$name" "$pid"); $probe"
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
    if ((workers)); then  # whether LiveKit brings one of the workers into a room
        if probe="$(agent_probe)"; then
            printf '%-13s %s\n' agents "$workers workers; $probe"
        else
            printf '%-13s %s\n' agents "$workers workers, NOT serving rooms: ${probe##*$'\n'}"
            rc=1
        fi
    fi
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
