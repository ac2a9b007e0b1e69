#!/usr/bin/env bash
# npm packages for the browser client and its tests, installed into the cache
# root ($STREAMTALK_HOME/node/node_modules) and reused when present:
#   livekit-client  served to the browser (dist/livekit-client.umd.js)
#   playwright-core drives the system chromium in the browser tests
set -euo pipefail

LIVEKIT_CLIENT_VERSION="${LIVEKIT_CLIENT_VERSION:-2.23.0}"
STREAMTALK_HOME="${STREAMTALK_HOME:-$HOME/.cache/streamtalk}"
NODE_DIR="$STREAMTALK_HOME/node"

log() { printf '[install_node_deps %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

installed_version() {  # package -> version in node_modules, or empty
    local pj="$NODE_DIR/node_modules/$1/package.json"
    [[ -f "$pj" ]] || return 0
    node -e 'process.stdout.write(require(process.argv[1]).version)' "$pj"
}

command -v npm >/dev/null 2>&1 || { log "ERROR: npm not found; run scripts/install_system_deps.sh"; exit 1; }
if [[ -z "${PLAYWRIGHT_CORE_VERSION:-}" ]]; then
    PLAYWRIGHT_CORE_VERSION=1.65.1
    if (( $(node -p 'process.versions.node.split(".")[0]') < 20 )); then
        # playwright-core 1.65 needs Node 20; Debian 12's own nodejs is 18
        PLAYWRIGHT_CORE_VERSION=1.49.1
        log "Node $(node --version) is older than 20: using playwright-core $PLAYWRIGHT_CORE_VERSION"
    fi
fi

want=()
[[ "$(installed_version livekit-client)" == "$LIVEKIT_CLIENT_VERSION" ]] \
    || want+=("livekit-client@$LIVEKIT_CLIENT_VERSION")
[[ "$(installed_version playwright-core)" == "$PLAYWRIGHT_CORE_VERSION" ]] \
    || want+=("playwright-core@$PLAYWRIGHT_CORE_VERSION")

if [[ ${#want[@]} -eq 0 ]]; then
    log "livekit-client $LIVEKIT_CLIENT_VERSION, playwright-core $PLAYWRIGHT_CORE_VERSION present in $NODE_DIR"
    exit 0
fi

mkdir -p "$NODE_DIR"
if [[ ! -f "$NODE_DIR/package.json" ]]; then
    printf '{\n  "name": "streamtalk-node-deps",\n  "private": true\n}\n' >"$NODE_DIR/package.json"
fi
log "npm install ${want[*]} into $NODE_DIR"
# playwright-core never downloads browsers; the tests use the system chromium.
PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install --prefix "$NODE_DIR" \
    --no-audit --no-fund --no-progress --save-exact "${want[@]}"
test -f "$NODE_DIR/node_modules/livekit-client/dist/livekit-client.umd.js" \
    || { log "ERROR: livekit-client dist/livekit-client.umd.js missing"; exit 1; }
log "done"
