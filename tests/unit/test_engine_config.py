"""EngineConfig's `auto` settings resolved per device."""

from __future__ import annotations

import pytest
import torch

from tts_engine.config import EngineConfig


@pytest.mark.parametrize("setting, cpu, cuda", [
    ("auto", False, True),  # a CPU's steps slow down with the STT beside it: no gate there
    ("realtime", True, True),
    ("rows", False, False),
])
def test_admission_gates_by_real_time_on_cuda_by_default(monkeypatch, setting, cpu, cuda) -> None:
    env = {"TTS_ADMISSION": setting}
    assert EngineConfig.from_env(env, device="cpu").realtime_admission is cpu
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # resolved, never used
    assert EngineConfig.from_env(env, device="cuda").realtime_admission is cuda
