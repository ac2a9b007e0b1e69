#!/usr/bin/env bash
# The venv that runs the official `qwen-tts` implementation for the parity tests
# ($STREAMTALK_HOME/parity-venv). It pins transformers 4.57.3 (the official
# package's pin), so it cannot share the project venv. Every direct requirement
# is pinned exactly, the torch family from scripts/pins.sh. Needs SoX
# (install_system_deps.sh runs first). Keyed on this script, the pins and the
# Python version.
. "$(dirname "$0")/common.sh"

REQUIREMENTS=(
    "torch==$TORCH_VERSION" "torchaudio==$TORCHAUDIO_VERSION"
    "transformers==$PARITY_TRANSFORMERS_VERSION" "accelerate==$PARITY_ACCELERATE_VERSION"
    librosa==0.11.0 soundfile==0.14.0 einops==0.8.2 safetensors==0.8.0 numpy==2.4.6
    sox==1.5.0 onnxruntime==1.32.0
)
key="$(install_key "$0" "${REQUIREMENTS[*]}" "qwen-tts==$QWEN_TTS_VERSION" "$(python3 --version 2>&1)")"
if artefact_ready parity-venv "$key"; then
    exit 0
fi

dir="$(begin_artefact parity-venv "$key")"
log "creating parity venv $dir (official qwen-tts $QWEN_TTS_VERSION, transformers $PARITY_TRANSFORMERS_VERSION)"
command -v sox >/dev/null 2>&1 || die "the sox binary is missing: run scripts/install_system_deps.sh first"
python3 -m venv "$dir"
"$dir/bin/python" -m pip install -q --upgrade pip
"$dir/bin/python" -m pip install -q "${REQUIREMENTS[@]}"
# --no-deps: the package also pulls gradio (web demo only).
"$dir/bin/python" -m pip install -q --no-deps "qwen-tts==$QWEN_TTS_VERSION"
"$dir/bin/python" -c "import qwen_tts" || die "qwen_tts does not import in $dir"
finish_artefact parity-venv "$key"
log "parity venv ready: $STREAMTALK_HOME/parity-venv"
