#!/usr/bin/env bash
# Install everything the test suite needs (reused from the cache root when
# present) and run it. Usage: scripts/test.sh [pytest args...]
. "$(dirname "$0")/common.sh"
cd "$REPO_ROOT"

# System packages first: the parity venv's sox and the browser tests need them.
for step in install_system_deps setup_venv setup_parity_venv install_livekit_server install_node_deps; do
    bash "scripts/$step.sh"
done

log "ruff"
"$VENV/bin/ruff" check .

log "pytest"
set +e
"$PY" -m pytest -q -p no:cacheprovider "$@"
rc=$?
set -e
if [[ $rc -eq 5 ]]; then
    die "pytest collected no tests"
fi
exit $rc
