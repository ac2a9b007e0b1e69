# Every version the install scripts pin, in one place (sourced by common.sh).
# Each artefact in the cache root is keyed on the pins it uses, so changing a
# line here rebuilds exactly what depends on it (scripts/common.sh: install_key).
#
# The torch family: torch and everything compiled against it must come from one
# release, or its C++ symbols do not match (torchaudio 2.11.1 does not load
# against torch 2.11.0). The GPU hosts run torch 2.11.0 with torchaudio 2.11.0.
TORCH_VERSION=2.11.0
TORCHAUDIO_VERSION=2.11.0

# The official implementation the parity tests compare against, and its pins.
QWEN_TTS_VERSION=0.1.1
PARITY_TRANSFORMERS_VERSION=4.57.3
PARITY_ACCELERATE_VERSION=1.12.0

# LiveKit server (built with `go install`) and the npm packages for the web page
# and the browser tests; each may be overridden from the environment.
LIVEKIT_SERVER_VERSION="${LIVEKIT_SERVER_VERSION:-v1.13.5}"
LIVEKIT_CLIENT_VERSION="${LIVEKIT_CLIENT_VERSION:-2.23.0}"
PLAYWRIGHT_CORE_VERSION="${PLAYWRIGHT_CORE_VERSION:-1.65.1}"
