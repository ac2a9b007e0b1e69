"""streamtalk_common's foundations: percentiles, WAV I/O, the cache and output roots."""

from __future__ import annotations

import io
import wave
from pathlib import Path

import numpy as np
import pytest

from streamtalk_common.audio import (
    from_pcm16,
    pcm16_bytes,
    read_wav,
    to_pcm16,
    wav_bytes,
    wav_stream_header,
    write_wav,
)
from streamtalk_common.paths import REPO_ROOT, cache_root, output_root
from streamtalk_common.stats import latency_summary, percentile


def test_linear_percentile_interpolates_as_numpy_does() -> None:
    assert percentile([], 50) is None
    assert percentile([None, None], 50) is None
    assert percentile([5.0], 95) == 5.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile(list(range(101)), 95) == 95
    values = np.random.default_rng(0).exponential(100.0, 37).tolist()
    for q in (0, 5, 50, 95, 99, 100):
        assert percentile(values + [None], q) == pytest.approx(float(np.percentile(values, q)))


def test_nearest_rank_percentile_is_a_measured_value() -> None:
    values = list(range(1, 21))  # 1..20
    assert percentile(values, 95, "nearest_rank") == 19
    assert percentile(values, 50, "nearest_rank") == 10
    assert percentile([5.0], 95, "nearest_rank") == 5.0
    with pytest.raises(ValueError, match="valid: linear, nearest_rank"):
        percentile(values, 50, "median")  # type: ignore[arg-type]


def test_latency_summary() -> None:
    assert latency_summary([30.04, 10.0, 20.0]) == {
        "n": 3, "p50_ms": 20.0, "p95_ms": 29.0, "min_ms": 10.0, "max_ms": 30.0}
    assert latency_summary([]) == {"n": 0, "p50_ms": None, "p95_ms": None, "min_ms": None,
                                   "max_ms": None}


def test_pcm16_scaling_clips_and_rounds() -> None:
    x = np.array([-2.0, -1.0, -0.5, 0.0, 1e-5, 0.5, 1.0, 2.0])
    pcm16 = to_pcm16(x)
    assert pcm16.tolist() == [-32767, -32767, -16384, 0, 0, 16384, 32767, 32767]
    assert pcm16_bytes(x) == pcm16.astype("<i2").tobytes()
    assert np.abs(from_pcm16(pcm16)[1:-1] - x[1:-1]).max() <= 0.5 / 32767


def test_wav_round_trip(tmp_path: Path) -> None:
    pcm = np.arange(-500, 500, dtype=np.int16)
    path = tmp_path / "new" / "x.wav"  # the folder is made
    write_wav(path, pcm, 16000)
    back, rate = read_wav(path)
    assert rate == 16000 and back.dtype == np.int16 and np.array_equal(back, pcm)
    assert path.read_bytes() == wav_bytes(pcm.tobytes(), 16000)
    assert np.array_equal(read_wav(io.BytesIO(wav_bytes(pcm, 24000)))[0], pcm)


def test_a_wav_stream_header_is_a_whole_wav_header_of_unknown_length() -> None:
    pcm = np.arange(-500, 500, dtype=np.int16)
    header = wav_stream_header(24000)
    assert len(header) == 44 and header[4:8] == header[40:44] == b"\xff" * 4  # the sizes: unknown
    assert header[8:] == wav_bytes(pcm, 24000)[8:40] + header[40:]  # the format of a whole WAV
    back, rate = read_wav(io.BytesIO(header + pcm.tobytes()))
    assert rate == 24000 and np.array_equal(back, pcm)


def test_read_wav_names_what_a_wav_must_be(tmp_path: Path) -> None:
    stereo = tmp_path / "stereo.wav"
    write_wav(stereo, np.zeros(8, dtype=np.int16), 16000, channels=2)
    with pytest.raises(ValueError, match=r"stereo.wav: 16-bit mono WAV needed, got 16-bit with 2"):
        read_wav(stereo)
    eight_bit = io.BytesIO()
    with wave.open(eight_bit, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(1)
        w.setframerate(8000)
        w.writeframes(bytes(8))
    eight_bit.seek(0)
    with pytest.raises(ValueError, match="16-bit mono WAV needed, got 8-bit"):
        read_wav(eight_bit)
    text = tmp_path / "notes.wav"
    text.write_text("not audio")
    with pytest.raises(ValueError, match="notes.wav: not a readable WAV"):
        read_wav(text)
    with pytest.raises(OSError):
        read_wav(tmp_path / "missing.wav")


def test_roots_follow_the_environment() -> None:
    assert cache_root({"STREAMTALK_HOME": "/srv/st"}) == Path("/srv/st")
    assert cache_root({}) == Path.home() / ".cache" / "streamtalk"
    assert output_root({"STREAMTALK_OUTPUT": "/tmp/out"}) == Path("/tmp/out")
    assert output_root({"STREAMTALK_OUTPUT": ""}) == REPO_ROOT / "output"
    assert (REPO_ROOT / "streamtalk_common" / "paths.py").is_file()
