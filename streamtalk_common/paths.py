"""Where streamtalk keeps things: the cache root and the output root.

- The cache root, `$STREAMTALK_HOME` (default `~/.cache/streamtalk`), holds what is heavy and
  reused: venvs, the LiveKit binary, node modules, checkpoints, the tokenizer files.
- The output root, `$STREAMTALK_OUTPUT` (default `output/` in the repository), holds what a
  run writes: traces, recordings, reports, benchmark results.

scripts/common.sh gives the shell scripts the same two defaults.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def cache_root(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    return Path(env.get("STREAMTALK_HOME") or Path.home() / ".cache" / "streamtalk")


def output_root(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    return Path(env.get("STREAMTALK_OUTPUT") or REPO_ROOT / "output")
