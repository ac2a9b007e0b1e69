"""Every error the engine reports to a caller, as one typed hierarchy.

Each class carries the `code` and HTTP `status` the server sends, so the
server maps an error by its type, never by its message:

    TTSError
    ├── ConfigValueError          a TTS_* knob (or the flag or argument that sets it) has a
    │                             value the engine cannot run with; also the shared
    │                             streamtalk_common ConfigError, a ValueError
    ├── RequestError (400)        bad input; `valid` lists what would be accepted
    │   ├── UnknownSpeaker
    │   ├── UnknownLanguage
    │   ├── InvalidText           empty text
    │   └── TextTooLong
    ├── OverCapacity (503)        no room within TTS_QUEUE_TIMEOUT_S; `retry_after_s`
    ├── ReplyTooLong              the reply outgrew its row (its audio so far was sent)
    ├── EngineOutOfMemory (503)
    ├── EngineClosed (503)
    └── EngineStartError          the engine refuses to start (device, memory, port, model)
        ├── CheckpointError       a model directory that cannot be loaded (also a ValueError)
        │   ├── ModelConfigError  its config.json is not a Qwen3-TTS 12 Hz CustomVoice config
        │   └── CodecCheckpointError  its speech tokenizer cannot be loaded
        └── TokenizerFilesError   a text-tokenizer file is missing or wrong
"""

from __future__ import annotations

from streamtalk_common import errors as common  # by module: every class here is a TTSError


class TTSError(Exception):
    code = "internal_error"
    status = 500

    def __init__(self, message: str, valid: list[str] | None = None) -> None:
        super().__init__(message)
        self.valid = valid


class ConfigValueError(TTSError, common.ConfigError):
    code = "invalid_config"


class RequestError(TTSError, ValueError):
    code = "invalid_request"
    status = 400


class UnknownSpeaker(RequestError):
    code = "unknown_speaker"


class UnknownLanguage(RequestError):
    code = "unknown_language"


class InvalidText(RequestError):
    code = "invalid_text"


class TextTooLong(InvalidText):
    code = "text_too_long"


class OverCapacity(TTSError):
    code = "over_capacity"
    status = 503

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class ReplyTooLong(TTSError):
    code = "reply_too_long"


class EngineOutOfMemory(TTSError):
    code = "out_of_memory"
    status = 503


class EngineClosed(TTSError):
    code = "engine_closed"
    status = 503


class EngineStartError(TTSError, RuntimeError):
    code = "engine_start_failed"


class CheckpointError(EngineStartError, ValueError):
    code = "checkpoint_invalid"


class ModelConfigError(CheckpointError):
    code = "model_config_invalid"


class CodecCheckpointError(CheckpointError):
    code = "codec_checkpoint_invalid"


class TokenizerFilesError(EngineStartError):
    code = "tokenizer_files_invalid"
