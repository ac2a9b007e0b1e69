#!/usr/bin/env bash
# npm packages for the browser client and its tests, in the cache root
# ($STREAMTALK_HOME/node/node_modules):
#   livekit-client  served to the browser (dist/livekit-client.umd.js)
#   playwright-core drives the system chromium in the browser tests
# Keyed on this script, the versions (scripts/pins.sh) and Node's major version.
. "$(dirname "$0")/common.sh"

command -v npm >/dev/null 2>&1 || die "npm not found; run scripts/install_system_deps.sh"
node_major="$(node -p 'process.versions.node.split(".")[0]')"
if (( node_major < 20 )); then
    # playwright-core 1.65 needs Node 20; Debian 12's own nodejs is 18
    PLAYWRIGHT_CORE_VERSION=1.49.1
    log "Node $(node --version) is older than 20: using playwright-core $PLAYWRIGHT_CORE_VERSION"
fi

key="$(install_key "$0" "livekit-client@$LIVEKIT_CLIENT_VERSION" \
    "playwright-core@$PLAYWRIGHT_CORE_VERSION" "node $node_major")"
if artefact_ready node "$key"; then
    log "livekit-client $LIVEKIT_CLIENT_VERSION, playwright-core $PLAYWRIGHT_CORE_VERSION present in $STREAMTALK_HOME/node"
    exit 0
fi

dir="$(begin_artefact node "$key")"
printf '{\n  "name": "streamtalk-node-deps",\n  "private": true\n}\n' >"$dir/package.json"
log "npm install livekit-client@$LIVEKIT_CLIENT_VERSION playwright-core@$PLAYWRIGHT_CORE_VERSION into $dir"
if (( node_major < 22 )); then
    log "expected and harmless below: npm's EBADENGINE warning for machina (livekit-client's dependency wants Node >= 22.22); only the self-contained dist/livekit-client.umd.js is used, in the browser"
fi
# playwright-core never downloads browsers; the tests use the system chromium.
PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install --prefix "$dir" \
    --no-audit --no-fund --no-progress --save-exact \
    "livekit-client@$LIVEKIT_CLIENT_VERSION" "playwright-core@$PLAYWRIGHT_CORE_VERSION"
test -f "$dir/node_modules/livekit-client/dist/livekit-client.umd.js" \
    || die "livekit-client dist/livekit-client.umd.js missing"
finish_artefact node "$key"
log "node packages ready: $STREAMTALK_HOME/node"
