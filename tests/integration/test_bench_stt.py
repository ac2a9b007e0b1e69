"""`python -m agent.bench_stt` against the real dev backend (faster-whisper), and its errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from support.infra import free_port

from agent import bench_stt

pytestmark = pytest.mark.timeout(120)


def test_recognises_each_wav_and_writes_table_and_json(
    omni_dev_server: Any, make_speech_wav: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wav = make_speech_wav("What is the weather like today?", sample_rate=48000)
    out = tmp_path / "stt.json"
    rc = bench_stt.main([str(wav), "--base-url", omni_dev_server.base_url, "--repeat", "2",
                         "--warmup", "1", "--json", str(out)])
    assert rc == 0
    result = json.loads(out.read_text())
    (row,) = result["wavs"]
    assert "weather" in row["text"].lower()  # really recognised, at the agent's 16 kHz
    assert row["n"] == 2 and 0 < row["min_ms"] <= row["p50_ms"] <= row["p95_ms"] <= row["max_ms"]
    assert row["audio_s"] == pytest.approx(bench_stt.load_frame(wav).duration, abs=0.01)
    table = capsys.readouterr().out.splitlines()
    assert table[-1].startswith(wav.name) and "P50 ms" in table[-3]


def test_bad_input_is_a_clear_error(tmp_path: Path, make_speech_wav: Any,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    not_wav = tmp_path / "x.wav"
    not_wav.write_text("hello")
    assert bench_stt.main([str(not_wav)]) == 2
    assert "x.wav: not a readable WAV" in capsys.readouterr().err
    wav = make_speech_wav("hello", sample_rate=16000)
    dead = f"http://127.0.0.1:{free_port()}/v1"
    assert bench_stt.main([str(wav), "--base-url", dead, "--timeout-s", "2"]) == 2
    assert "bench_stt:" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench_stt.main([str(wav), "--repeat", "0"])
