"""LiveKit API keys on disk: the key file livekit-server reads (`--key-file`), so a secret
never shows on a command line."""

from __future__ import annotations

import os
from pathlib import Path


def write_key_file(path: Path, api_key: str, api_secret: str) -> Path:
    """A LiveKit key file (`key: secret`), mode 600 as livekit-server requires."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f'{api_key}: "{api_secret}"\n')
    return path
