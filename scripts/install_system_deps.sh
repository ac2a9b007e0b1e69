#!/usr/bin/env bash
# System packages the stack and its browser tests need (Debian 12 / Ubuntu):
# chromium (headless browser tests), espeak-ng (deterministic test speech),
# sox (audio inspection), nodejs + npm (playwright-core, livekit-client),
# redis-server (several LiveKit nodes share rooms through it: LIVEKIT_NODES=2 in
# start_all.sh, the multi-node tests; started by them on loopback, never as a system
# service here), curl and ca-certificates, g++ and python3-dev (torch.compile,
# TTS_COMPILE=1, builds C++ against Python's headers on a CPU, as its tests do).
# Installs only what is missing; non-interactive.
# Run as root, or as a user with passwordless sudo.
set -euo pipefail

log() { printf '[install_system_deps %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# command -> Debian package providing it
declare -A WANT=(
    [chromium]=chromium
    [espeak-ng]=espeak-ng
    [sox]=sox
    [node]=nodejs
    [npm]=npm
    [curl]=curl
    [g++]=g++
    [redis-server]=redis-server
)

missing=()
for cmd in "${!WANT[@]}"; do
    if ! command -v "$cmd" >/dev/null 2>&1; then
        missing+=("${WANT[$cmd]}")
    fi
done
if ! python3 -c 'import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' 2>/dev/null; then
    missing+=(python3-dev)
fi
if [[ ! -e /etc/ssl/certs/ca-certificates.crt ]]; then
    missing+=(ca-certificates)
fi
# chromium on Debian needs fonts to render text in screenshots
if ! fc-list 2>/dev/null | grep -qi dejavu; then
    missing+=(fonts-dejavu-core)
fi

if [[ ${#missing[@]} -eq 0 ]]; then
    log "all system packages present"
    exit 0
fi

SUDO=""
if [[ "$(id -u)" -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO="sudo -n"
    else
        log "ERROR: need root to install: ${missing[*]}"
        log "run: sudo apt-get install -y ${missing[*]}"
        exit 1
    fi
fi

export DEBIAN_FRONTEND=noninteractive
log "apt-get update"
$SUDO apt-get update -q
log "installing: ${missing[*]}"
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
log "done"
