#!/usr/bin/env bash
# The project's Python venv in the cache root ($STREAMTALK_HOME/venv): the
# dependencies of pyproject.toml with every extra, torch pinned exactly
# (scripts/pins.sh). The project itself is not installed: the code runs from
# the checkout (scripts put it on PYTHONPATH), so one venv serves every clone.
# Keyed on this script, pyproject.toml, the torch pin and the Python version.
. "$(dirname "$0")/common.sh"

EXTRAS=(agent omni-dev autortc supervisor dev)
key="$(install_key "$0" "$REPO_ROOT/pyproject.toml" "torch==$TORCH_VERSION" \
    "${EXTRAS[*]}" "$(python3 --version 2>&1)")"
if artefact_ready venv "$key"; then
    exit 0
fi

dir="$(begin_artefact venv "$key")"
log "creating venv $dir (the first run downloads torch, several GB)"
python3 -m venv "$dir"
# pyproject's dependencies and extras as a requirements list, read with the
# standard library (no build backend, no editable install)
python3 - "$REPO_ROOT/pyproject.toml" "${EXTRAS[@]}" >"$dir/requirements.txt" <<'PYEOF'
import sys, tomllib
project = tomllib.load(open(sys.argv[1], "rb"))["project"]
reqs = list(project["dependencies"])
for extra in sys.argv[2:]:
    reqs += project["optional-dependencies"][extra]
print("\n".join(reqs))
PYEOF
printf 'torch==%s\n' "$TORCH_VERSION" >"$dir/constraints.txt"
"$dir/bin/python" -m pip install -q --upgrade pip
"$dir/bin/python" -m pip install -q -r "$dir/requirements.txt" -c "$dir/constraints.txt"
got="$("$dir/bin/python" -c 'import torch; print(torch.__version__.split("+")[0])')"
[[ "$got" == "$TORCH_VERSION" ]] || die "venv has torch $got, scripts/pins.sh pins $TORCH_VERSION"
finish_artefact venv "$key"
log "venv ready: $VENV (torch $got)"
