#!/usr/bin/env bash
# Build the venv that runs the official `qwen-tts` implementation for parity
# tests. It pins transformers 4.57.3 (the official package's pin), so it
# cannot share the project venv. Reused when present.
. "$(dirname "$0")/common.sh"

PARITY_VENV="$STREAMTALK_HOME/parity-venv"
stamp="$PARITY_VENV/.streamtalk-parity-v1"
if [[ -f "$stamp" ]]; then
    exit 0
fi
log "creating parity venv $PARITY_VENV (official qwen-tts 0.1.1, transformers 4.57.3)"
python3 -m venv "$PARITY_VENV"
P="$PARITY_VENV/bin/python"
"$P" -m pip install -q --upgrade pip
"$P" -m pip install -q "torch==2.11.*" "torchaudio==2.11.*" "transformers==4.57.3" \
    "accelerate==1.12.0" librosa soundfile einops safetensors numpy sox onnxruntime
# --no-deps: the package also pulls gradio (web demo only).
"$P" -m pip install -q --no-deps "qwen-tts==0.1.1"
"$P" -c "import qwen_tts" || die "qwen_tts does not import in $PARITY_VENV"
touch "$stamp"
log "parity venv ready"
