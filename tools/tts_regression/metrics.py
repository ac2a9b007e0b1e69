"""Pure metric functions of the TTS regression gates (numpy only, no engine).

Definitions (also in docs/TTS_REGRESSION.md):

* SNR (dB) of a test signal against a reference: 10*log10(sum(ref^2) / sum((test-ref)^2)).
  The shorter signal is zero-padded, so a length mismatch counts as error.
  Identical signals give SNR_CAP_DB (a finite stand-in for +inf so it fits JSON).
* Repeated fragment: the same block of tokens repeated back to back. On the
  codebook-0 code sequence a block of >= 8 frames repeated >= 3 times in a row
  (loops of the talker); on the audio, a block of >= 13 codec frames (1.04 s,
  1920 samples each) whose int16 samples are identical, repeated >= 2 times in a
  row (a duplicated stretch of stream output). Silent audio frames never match.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np

from streamtalk_common.audio import SAMPLES_PER_FRAME, from_pcm16, to_pcm16

SNR_CAP_DB = 150.0

CODE_REPEAT_MIN_LEN = 8
CODE_REPEAT_MIN_COUNT = 3
AUDIO_REPEAT_MIN_FRAMES = 13
AUDIO_REPEAT_MIN_COUNT = 2
SILENT_RMS = 1e-3  # the engine's silent-packet threshold
CLIP_LEVEL = 0.999


def snr_db(reference: np.ndarray, test: np.ndarray) -> float:
    """SNR of `test` against `reference` in dB (zero-padded to the longer length)."""
    ref = np.asarray(reference, dtype=np.float64).ravel()
    tst = np.asarray(test, dtype=np.float64).ravel()
    n = max(len(ref), len(tst))
    if n == 0:
        raise ValueError("snr_db: both signals are empty")
    ref = np.pad(ref, (0, n - len(ref)))
    tst = np.pad(tst, (0, n - len(tst)))
    signal = float(np.sum(ref * ref))
    noise = float(np.sum((tst - ref) ** 2))
    if noise == 0.0:
        return SNR_CAP_DB
    if signal == 0.0:
        return -SNR_CAP_DB
    return float(min(SNR_CAP_DB, max(-SNR_CAP_DB, 10.0 * math.log10(signal / noise))))


def find_repeats(seq: list, min_len: int, min_count: int) -> list[dict]:
    """Blocks of >= min_len items occurring >= min_count times back to back.

    Returns one entry per start position that begins such a run, with the
    shortest block length found there. None items never match anything.
    """
    n = len(seq)
    found: list[dict] = []
    covered_until = -1
    for start in range(n):
        if start < covered_until:
            continue
        max_len = (n - start) // min_count
        for length in range(min_len, max_len + 1):
            block = seq[start:start + length]
            if any(x is None for x in block):
                continue
            count = 1
            pos = start + length
            while pos + length <= n and seq[pos:pos + length] == block:
                count += 1
                pos += length
            if count >= min_count:
                found.append({"start": start, "length": length, "count": count})
                covered_until = pos
                break
    return found


def code_repeats(codebook0: list[int]) -> list[dict]:
    return find_repeats(list(codebook0), CODE_REPEAT_MIN_LEN, CODE_REPEAT_MIN_COUNT)


def audio_frame_keys(pcm: np.ndarray) -> list[str | None]:
    """One hash per 1920-sample frame of int16 audio; None for silent or partial frames."""
    pcm16 = to_pcm16(pcm)
    keys: list[str | None] = []
    for i in range(len(pcm16) // SAMPLES_PER_FRAME):
        frame = pcm16[i * SAMPLES_PER_FRAME:(i + 1) * SAMPLES_PER_FRAME]
        rms = float(np.sqrt(np.mean(from_pcm16(frame) ** 2)))
        keys.append(None if rms < SILENT_RMS else hashlib.sha1(frame.tobytes()).hexdigest())
    return keys


def audio_repeats(pcm: np.ndarray) -> list[dict]:
    return find_repeats(audio_frame_keys(pcm), AUDIO_REPEAT_MIN_FRAMES, AUDIO_REPEAT_MIN_COUNT)


def packet_rms(pcm: np.ndarray, packet_frames: list[int]) -> list[float]:
    """RMS of each streamed packet, cutting the joined PCM by the packets' frame counts."""
    out: list[float] = []
    pos = 0
    for frames in packet_frames:
        part = np.asarray(pcm[pos:pos + frames * SAMPLES_PER_FRAME], dtype=np.float64)
        pos += frames * SAMPLES_PER_FRAME
        out.append(float(np.sqrt(np.mean(part * part))) if len(part) else 0.0)
    return out


def bad_audio(pcm: np.ndarray, packet_frames: list[int]) -> dict:
    """Counts of broken audio: empty, NaN/inf, all zero, silent packets, clipping."""
    x = np.asarray(pcm)
    finite = np.isfinite(x)
    rms = packet_rms(np.where(finite, x, 0.0), packet_frames)
    expected = sum(packet_frames) * SAMPLES_PER_FRAME
    return {
        "samples": int(len(x)),
        "empty": bool(len(x) == 0),
        "nonfinite_samples": int(np.size(x) - int(finite.sum())),
        "all_zero": bool(len(x) > 0 and not np.any(x[finite])),
        "packets": len(packet_frames),
        "silent_packets": int(sum(1 for r in rms if r < SILENT_RMS)),
        "empty_packets": int(sum(1 for f in packet_frames if f <= 0)),
        "packet_samples_mismatch": int(len(x) - expected),
        "clipped_fraction": (float(np.mean(np.abs(x[finite]) >= CLIP_LEVEL)) if finite.any()
                             else 0.0),
        "peak": float(np.max(np.abs(x[finite]))) if finite.any() else 0.0,
    }


def pcm_sha256(pcm: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(pcm, dtype=np.float32).tobytes()).hexdigest()
