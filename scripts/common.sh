# Shared shell helpers: the cache root, the project venv, logging.
# Source it from other scripts: `. "$(dirname "$0")/common.sh"`.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STREAMTALK_HOME="${STREAMTALK_HOME:-$HOME/.cache/streamtalk}"
STREAMTALK_OUTPUT="${STREAMTALK_OUTPUT:-$REPO_ROOT/output}"
VENV="$STREAMTALK_HOME/venv"
PY="$VENV/bin/python"
export STREAMTALK_HOME STREAMTALK_OUTPUT

log() { printf '[streamtalk %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# Create the project venv in the cache root and install the project with every
# extra. A stamp keyed by pyproject.toml's hash makes later runs a no-op.
ensure_venv() {
    mkdir -p "$STREAMTALK_HOME"
    local stamp="$VENV/.streamtalk-deps"
    local want
    want="$(sha256sum "$REPO_ROOT/pyproject.toml" | cut -c1-16)"
    if [[ -x "$PY" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
        return 0
    fi
    if [[ ! -x "$PY" ]]; then
        log "creating venv $VENV"
        python3 -m venv "$VENV"
    fi
    log "installing Python packages into $VENV (first run downloads torch, several GB)"
    "$PY" -m pip install -q --upgrade pip
    "$PY" -m pip install -q -e "$REPO_ROOT[agent,omni-dev,autortc,dev]"
    echo "$want" >"$stamp"
}
