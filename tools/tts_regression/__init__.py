"""TTS regression suite: six gates (determinism, stream/offline duration, repeats, SNR
against the golden baseline, TTFA, bad audio); docs/TTS_REGRESSION.md defines them.

    python -m tools.tts_regression --mode fast --profile ci
"""
