"""The embedded Qwen3-TTS streaming engine; its public API:

    from tts_engine import TTSEngine, EngineConfig, Request, PCMPacket, EngineClosed

- `EngineConfig`: every knob, read from TTS_* variables (`EngineConfig.from_env()`);
- `TTSEngine`: the continuously batched engine (`open_stream`, `synthesize_pcm`, `close`);
- `Request`: one validated synthesis request (`TTSEngine.make_request`);
- `StreamHandle`, `PCMPacket`, `RequestMetrics`: a stream, its packets, its metrics;
- the errors, all `TTSError` (tts_engine/errors.py).

`import tts_engine` loads neither torch nor the model code: the names that need them are
imported on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import (
    CheckpointError,
    CodecCheckpointError,
    ConfigValueError,
    EngineClosed,
    EngineOutOfMemory,
    EngineStartError,
    InvalidText,
    ModelConfigError,
    OverCapacity,
    ReplyTooLong,
    RequestError,
    TextTooLong,
    TokenizerFilesError,
    TTSError,
    UnknownLanguage,
    UnknownSpeaker,
)

if TYPE_CHECKING:
    from .config import EngineConfig
    from .runtime import PCMPacket, RequestMetrics, StreamHandle, TTSEngine
    from .synthesis import Request

_LAZY = {
    "EngineConfig": ".config",
    "TTSEngine": ".runtime",
    "StreamHandle": ".runtime",
    "PCMPacket": ".runtime",
    "RequestMetrics": ".runtime",
    "Request": ".synthesis",
}

__all__ = [
    "CheckpointError",
    "CodecCheckpointError",
    "ConfigValueError",
    "EngineClosed",
    "EngineConfig",
    "EngineOutOfMemory",
    "EngineStartError",
    "InvalidText",
    "ModelConfigError",
    "OverCapacity",
    "PCMPacket",
    "ReplyTooLong",
    "Request",
    "RequestError",
    "RequestMetrics",
    "StreamHandle",
    "TTSEngine",
    "TTSError",
    "TextTooLong",
    "TokenizerFilesError",
    "UnknownLanguage",
    "UnknownSpeaker",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value  # the next lookup is a plain one
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
