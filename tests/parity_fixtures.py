"""Fixtures for parity tests against the official qwen-tts package."""

from __future__ import annotations

from pathlib import Path

import pytest

from tools.talker_parity import default_parity_python


@pytest.fixture(scope="session")
def parity_python() -> Path:
    """The python of the venv that runs the official implementation."""
    python = default_parity_python()
    if not python.exists():
        pytest.fail(f"{python} is missing: run scripts/setup_parity_venv.sh (scripts/test.sh does it)")
    return python
