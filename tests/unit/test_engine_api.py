"""tts_engine's public API: what `from tts_engine import ...` gives, and what it costs."""

from __future__ import annotations

import subprocess
import sys

import pytest

import tts_engine
from tts_engine import errors


def test_import_tts_engine_loads_no_torch() -> None:
    code = "import sys, tts_engine; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


def test_every_public_name_resolves_to_its_defining_module() -> None:
    from tts_engine.config import EngineConfig
    from tts_engine.runtime import PCMPacket, StreamHandle, TTSEngine
    from tts_engine.synthesis import Request

    for cls in (EngineConfig, PCMPacket, StreamHandle, TTSEngine, Request):
        assert getattr(tts_engine, cls.__name__) is cls
    assert all(getattr(tts_engine, name) is not None for name in tts_engine.__all__)
    with pytest.raises(AttributeError, match="no attribute 'Engine'"):
        tts_engine.Engine  # noqa: B018


def test_every_engine_error_is_a_tts_error_with_its_own_code() -> None:
    classes = [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, Exception)]
    assert all(issubclass(c, errors.TTSError) for c in classes)
    assert len({c.code for c in classes}) == len(classes)
    assert {c.__name__ for c in classes} <= set(tts_engine.__all__)
    # a model directory that cannot be loaded stops the start, and stays a ValueError
    for c in (errors.ModelConfigError, errors.CodecCheckpointError):
        assert issubclass(c, errors.CheckpointError) and issubclass(c, ValueError)
    assert issubclass(errors.TokenizerFilesError, errors.EngineStartError)
