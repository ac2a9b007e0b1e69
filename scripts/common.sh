# Shared shell helpers: the cache root, its keyed artefacts, the project venv, logging.
# Source it from other scripts: `. "$(dirname "$0")/common.sh"`.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STREAMTALK_HOME="${STREAMTALK_HOME:-$HOME/.cache/streamtalk}"
STREAMTALK_OUTPUT="${STREAMTALK_OUTPUT:-$REPO_ROOT/output}"
# Download caches (Go modules) survive a rebuild of the cache root; pip keeps its own.
STREAMTALK_DOWNLOADS="${STREAMTALK_DOWNLOADS:-$STREAMTALK_HOME/downloads}"
VENV="$STREAMTALK_HOME/venv"
PY="$VENV/bin/python"
export STREAMTALK_HOME STREAMTALK_OUTPUT STREAMTALK_DOWNLOADS
# The code runs from the checkout; the venv holds only the dependencies.
export PYTHONPATH="$REPO_ROOT${PYTHONPATH:+:$PYTHONPATH}"

. "$REPO_ROOT/scripts/pins.sh"

log() { printf '[streamtalk %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ------------------------------------------------------------ keyed artefacts
# Every heavy thing in the cache root (venvs, the LiveKit binary, node modules)
# is built into its own folder NAME-KEY, where KEY hashes what it is built from:
# its install script, the pins it uses, the version of the tool that builds it.
# $STREAMTALK_HOME/NAME is a link to the current build. Changed inputs give a new
# key, so the artefact is built from scratch beside the old one, never patched in
# place; the link moves once the build is complete, then older builds go.

install_key() {  # INPUT... -> 16 hex digits; an INPUT that is a file counts by content
    local arg
    for arg in "$@"; do
        if [[ -f "$arg" ]]; then
            printf 'file %s\n' "${arg##*/}"
            cat "$arg"
        else
            printf 'text %s\n' "$arg"
        fi
    done | sha256sum | cut -c1-16
}

artefact_dir() { echo "$STREAMTALK_HOME/$1-$2"; }  # NAME KEY

artefact_ready() {  # NAME KEY -> 0 (and the link points at it) when that build is complete
    [[ -f "$(artefact_dir "$1" "$2")/.streamtalk-complete" ]] || return 1
    [[ "$(readlink "$STREAMTALK_HOME/$1" 2>/dev/null)" == "$1-$2" ]] || link_artefact "$1" "$2"
}

begin_artefact() {  # NAME KEY -> an empty folder for the build (a half-built one is discarded)
    local dir
    dir="$(artefact_dir "$1" "$2")"
    remove_tree "$dir"
    mkdir -p "$dir"
    echo "$dir"
}

finish_artefact() {  # NAME KEY: mark the build complete, link it, remove older builds
    local dir old
    dir="$(artefact_dir "$1" "$2")"
    date -u +%FT%TZ >"$dir/.streamtalk-complete"
    link_artefact "$1" "$2"
    for old in "$STREAMTALK_HOME/$1"-*; do
        [[ "$old" == "$dir" || ! -d "$old" ]] || remove_tree "$old"
    done
}

link_artefact() {  # NAME KEY: point $STREAMTALK_HOME/NAME at NAME-KEY (replaces an old real folder)
    local link="$STREAMTALK_HOME/$1"
    [[ -L "$link" || ! -e "$link" ]] || remove_tree "$link"
    ln -sfn "$1-$2" "$link.new"
    mv -Tf "$link.new" "$link"
}

remove_tree() {  # Go marks its module files read-only, so make them writable first
    [[ -e "$1" || -L "$1" ]] || return 0
    chmod -R u+w "$1" 2>/dev/null || true
    rm -rf "$1"
}

# Everything the install scripts build from: .ci/run compares this with the
# inputs the cache root was last proven with.
all_install_inputs_key() {
    install_key "$REPO_ROOT/scripts/pins.sh" "$REPO_ROOT/pyproject.toml" \
        "$REPO_ROOT/scripts/common.sh" "$REPO_ROOT/scripts/setup_venv.sh" \
        "$REPO_ROOT/scripts/setup_parity_venv.sh" "$REPO_ROOT"/scripts/install_*.sh \
        "$REPO_ROOT/.ci/run" "$(python3 --version 2>&1)" \
        "$(go version 2>/dev/null || /usr/local/go/bin/go version 2>/dev/null || true)" \
        "$(node --version 2>/dev/null || true)"
}

