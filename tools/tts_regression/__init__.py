"""TTS regression suite: the six gates of the seed (determinism, stream/offline
duration, repeats, SNR against the golden baseline, TTFA, bad audio).

    python -m tools.tts_regression --mode fast --profile ci
"""
