#!/usr/bin/env bash
# The LiveKit API key and secret that the local stack's services share.
#
# Unless LIVEKIT_API_KEY and LIVEKIT_API_SECRET are both given, the first start
# generates a key and a secret of 32 random bytes into $LIVEKIT_KEY_FILE
# (default $STREAMTALK_HOME/livekit-keys.yaml, mode 600); later starts reuse it.
# livekit-server reads the keys from a key file (--key-file), never from its
# command line; the other services get them through their environment.
#
#   . scripts/livekit_keys.sh; load_livekit_keys
#       exports LIVEKIT_API_KEY, LIVEKIT_API_SECRET and LIVEKIT_SERVER_KEY_FILE,
#       the file to hand livekit-server
#   scripts/livekit_keys.sh CMD ARGS...
#       the same, then runs CMD (supervisord's programs, an agent started by hand)
declare -F die >/dev/null || . "$(dirname "${BASH_SOURCE[0]}")/common.sh"

LIVEKIT_KEY_FILE="${LIVEKIT_KEY_FILE:-$STREAMTALK_HOME/livekit-keys.yaml}"

write_key_file() {  # PATH KEY SECRET replace|keep: a mode-600 file livekit-server reads
    local tmp placed=0
    mkdir -p "$(dirname "$1")"
    tmp="$(mktemp "$1.XXXXXX")"  # mktemp creates it with mode 600
    printf '# LiveKit API key and secret of the local streamtalk stack\n%s: "%s"\n' "$2" "$3" >"$tmp"
    if [[ "$4" == replace ]]; then
        mv -f "$tmp" "$1"  # a rename: a reader never finds the file missing or half written
    elif ln -T "$tmp" "$1" 2>/dev/null; then  # a link never replaces: two first starts keep one pair
        placed=1
    fi
    rm -f "$tmp"
    [[ "$4" == replace || $placed == 1 ]]
}

random_hex() { od -An -vtx1 -N"$1" /dev/urandom | tr -d ' \n'; }  # BYTES

load_livekit_keys() {
    local key="${LIVEKIT_API_KEY:-}" secret="${LIVEKIT_API_SECRET:-}"
    if [[ -n "$key" || -n "$secret" ]]; then
        [[ -n "$key" && -n "$secret" ]] \
            || die "set both LIVEKIT_API_KEY and LIVEKIT_API_SECRET, or neither (then the keys in $LIVEKIT_KEY_FILE are used)"
        [[ "$key" =~ ^[A-Za-z0-9_-]+$ && "$secret" =~ ^[^\"\\[:space:]]+$ ]] \
            || die "LIVEKIT_API_KEY may hold letters, digits, - and _; LIVEKIT_API_SECRET no spaces, quotes or backslashes"
        # given keys reach livekit-server through a file of this run, not its command line
        export LIVEKIT_SERVER_KEY_FILE="$STREAMTALK_OUTPUT/run/livekit-keys.yaml"
        write_key_file "$LIVEKIT_SERVER_KEY_FILE" "$key" "$secret" replace
        return 0
    fi
    if [[ ! -e "$LIVEKIT_KEY_FILE" ]] \
        && write_key_file "$LIVEKIT_KEY_FILE" "API$(random_hex 6)" "$(random_hex 32)" keep; then
        log "generated LiveKit API keys in $LIVEKIT_KEY_FILE"
    fi
    local mode line
    mode="$(stat -c %a "$LIVEKIT_KEY_FILE")" || die "cannot read the LiveKit key file $LIVEKIT_KEY_FILE"
    if ((8#$mode & 8#077)); then
        die "$LIVEKIT_KEY_FILE may be read by others (mode $mode): chmod 600 it, or delete it to generate new keys"
    fi
    line="$(grep -Ev '^[[:space:]]*(#|$)' "$LIVEKIT_KEY_FILE" || true)"
    [[ "$line" =~ ^([A-Za-z0-9_-]+):[[:space:]]*\"?([^\"\\[:space:]]+)\"?$ ]] \
        || die "$LIVEKIT_KEY_FILE must hold one line KEY: \"SECRET\" (delete it to generate new keys)"
    export LIVEKIT_API_KEY="${BASH_REMATCH[1]}" LIVEKIT_API_SECRET="${BASH_REMATCH[2]}"
    export LIVEKIT_SERVER_KEY_FILE="$LIVEKIT_KEY_FILE"
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    (($#)) || { echo "usage: $0 CMD [ARGS...]" >&2; exit 2; }
    load_livekit_keys
    exec "$@"
fi
