#!/usr/bin/env bash
# Run a service and start it again when it exits by itself:
#
#   scripts/keep_running.sh NAME CMD...
#
# start_all.sh and the soak run each agent worker through it; supervisord restarts its
# programs itself. A worker that recycled (exit status 75, RECYCLE_EXIT_CODE in
# agent/recycle.py) is started again at once. Any other exit of a run that lasted
# RESTART_MIN_UP_S (30) or more is started again after RESTART_BACKOFF_S (5); one that ends
# sooner is a failed start, not retried: this
# script then exits with its status (start_all.sh reports it, its status shows the service
# dead). SIGTERM or SIGINT (stopping the service signals its whole process group, the command
# included) ends the loop: the command is waited for, never started again. Each exit is one
# line on stderr, with its UTC time (the soak reads it: tools/soak/lifetimes.py).
set -u
RECYCLE_STATUS=75
RESTART_MIN_UP_S="${RESTART_MIN_UP_S:-30}"
RESTART_BACKOFF_S="${RESTART_BACKOFF_S:-5}"

say() { printf '[keep_running %s] %s\n' "$(date -u +%Y-%m-%dT%H:%M:%S.%3NZ)" "$*" >&2; }

(($# >= 2)) || { echo "usage: $0 NAME CMD..." >&2; exit 2; }
name="$1"
shift
stopping=0
trap 'stopping=1' TERM INT
while :; do
    started=$SECONDS
    "$@" &
    child=$!
    # a trapped signal ends `wait` early: wait again until the command is gone
    while wait "$child"; status=$?; kill -0 "$child" 2>/dev/null; do :; done
    up=$((SECONDS - started))
    ((stopping)) && exit "$status"
    if ((status == RECYCLE_STATUS)); then
        say "$name exited with status $status after $up s (recycled); starting it again"
    elif ((up >= RESTART_MIN_UP_S)); then
        say "$name exited with status $status after $up s, unexpectedly;" \
            "starting it again in $RESTART_BACKOFF_S s"
        sleep "$RESTART_BACKOFF_S" & wait $!
        ((stopping)) && exit "$status"
    else
        say "$name exited with status $status after $up s, within $RESTART_MIN_UP_S s of its" \
            "start: not starting it again"
        exit "$status"
    fi
done
