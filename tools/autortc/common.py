"""Shared helpers of the AutoRTC tools: WAV I/O, protocol names, small JSON utilities."""

from __future__ import annotations

import json
import os
import wave
from pathlib import Path
from typing import Any

import numpy as np

TOPIC_PROBE = "autortc.probe"
TOPIC_AGENT = "autortc.agent"
SILENCE_RMS = 0.01  # valid capture: max(reply_rms, full_rms) >= this
FRAME_MS = 10
REPO_ROOT = Path(__file__).resolve().parents[2]


def output_root() -> Path:
    return Path(os.environ.get("STREAMTALK_OUTPUT") or REPO_ROOT / "output")


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """16-bit mono WAV -> float32 samples in [-1, 1] and the rate."""
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2 or w.getnchannels() != 1:
            raise ValueError(f"{path}: expected 16-bit mono WAV")
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
        return pcm.astype(np.float32) / 32768.0, w.getframerate()


def write_wav(path: Path, x: np.ndarray, rate: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pcm = np.clip(np.asarray(x, dtype=np.float64) * 32768.0, -32768, 32767).astype(np.int16)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return path


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if len(x) else 0.0


def write_json(path: Path, obj: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
    return path


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def percentile(values: list[float], q: float) -> float | None:
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    return float(np.percentile(np.asarray(vals, dtype=np.float64), q))
