#!/usr/bin/env bash
# Install everything the test suite needs (reused from the cache root when
# present) and run it. Usage: scripts/test.sh [pytest args...]
. "$(dirname "$0")/common.sh"
cd "$REPO_ROOT"

ensure_venv
bash scripts/setup_parity_venv.sh
for step in install_system_deps install_livekit_server install_node_deps; do
    if [[ -f "scripts/$step.sh" ]]; then
        bash "scripts/$step.sh"
    fi
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
