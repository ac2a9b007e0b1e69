"""Fixtures for parity tests against the official qwen-tts package."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def parity_python() -> Path:
    """The python of the venv that runs the official implementation."""
    home = Path(os.environ.get("STREAMTALK_HOME") or Path.home() / ".cache" / "streamtalk")
    python = home / "parity-venv" / "bin" / "python"
    if not python.exists():
        pytest.fail(f"{python} is missing: run scripts/setup_parity_venv.sh (scripts/test.sh does it)")
    return python
