"""The audio every package exchanges: its rates, 16-bit PCM and mono WAV files.

The engine makes float PCM in [-1, 1] at `SAMPLE_RATE`; on the wire and on disk it is
little-endian int16, `to_pcm16` scaling by 32767 and rounding (so `from_pcm16` inverts it
to within half a step).
"""

from __future__ import annotations

import io
import struct
import wave
from pathlib import Path
from typing import BinaryIO

import numpy as np

SAMPLE_RATE = 24000  # the 12 Hz codec's output: what the engine emits and the agent publishes
SAMPLES_PER_FRAME = 1920  # one codec frame: 80 ms at SAMPLE_RATE
INPUT_SAMPLE_RATE = 16000  # the agent's room input: what the VAD, STT and end-of-turn model hear
PCM16_SCALE = 32767.0
PCM16_BYTES = 2  # bytes of one int16 sample


def to_pcm16(pcm: np.ndarray) -> np.ndarray:
    """float PCM in [-1, 1] (clipped) -> int16."""
    scaled = np.clip(np.asarray(pcm, dtype=np.float64), -1.0, 1.0) * PCM16_SCALE
    return scaled.round().astype(np.int16)


def from_pcm16(pcm16: np.ndarray) -> np.ndarray:
    """int16 -> float64 PCM in [-1, 1]."""
    return np.asarray(pcm16, dtype=np.float64) / PCM16_SCALE


def pcm16_bytes(pcm: np.ndarray) -> bytes:
    """float PCM in [-1, 1] -> little-endian int16 bytes."""
    return to_pcm16(pcm).astype("<i2").tobytes()


def write_wav(target: str | Path | BinaryIO, pcm16: np.ndarray | bytes, sample_rate: int,
              channels: int = 1) -> None:
    """16-bit PCM (int16 samples or their little-endian bytes, channels interleaved) as a
    WAV, to a path (its folder made first) or a binary file object."""
    if isinstance(target, str | Path):
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        target = str(target)
    data = pcm16 if isinstance(pcm16, bytes) else np.asarray(pcm16, dtype="<i2").tobytes()
    with wave.open(target, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(data)


def wav_bytes(pcm16: np.ndarray | bytes, sample_rate: int, channels: int = 1) -> bytes:
    """16-bit PCM as the bytes of a WAV file."""
    buf = io.BytesIO()
    write_wav(buf, pcm16, sample_rate, channels)
    return buf.getvalue()


def wav_stream_header(sample_rate: int, channels: int = 1) -> bytes:
    """The 44-byte header of a 16-bit PCM WAV stream of unknown length: the RIFF and data
    sizes at their maximum, which players of a stream read as "until the end"."""
    block = channels * PCM16_BYTES
    return (b"RIFF" + struct.pack("<I", 0xFFFFFFFF) + b"WAVE"
            + b"fmt " + struct.pack("<IHHIIHH", 16, 1, channels, sample_rate, sample_rate * block,
                                    block, 16)
            + b"data" + struct.pack("<I", 0xFFFFFFFF))


def read_wav(source: str | Path | BinaryIO) -> tuple[np.ndarray, int]:
    """A 16-bit mono WAV's int16 samples and rate. ValueError when the file is not one
    (OSError when it cannot be opened)."""
    name = getattr(source, "name", None) or str(source)
    try:
        with wave.open(source if hasattr(source, "read") else str(source), "rb") as w:
            if w.getsampwidth() != 2 or w.getnchannels() != 1:
                raise ValueError(f"{name}: 16-bit mono WAV needed, got {8 * w.getsampwidth()}-bit "
                                 f"with {w.getnchannels()} channel(s)")
            rate, data = w.getframerate(), w.readframes(w.getnframes())
    except (wave.Error, EOFError) as exc:
        raise ValueError(f"{name}: not a readable WAV ({exc})") from None
    return np.frombuffer(data, dtype="<i2").astype(np.int16), rate
