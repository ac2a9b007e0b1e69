"""`python -m tts_engine bench memory` and `bench metrics` on CPU with the tiny checkpoint:
the rows they write (no timings are checked)."""

from __future__ import annotations

import json

from tts_engine.__main__ import main
from tts_engine.codec_stream import CodecStreamDecoder
from tts_engine.runtime.memory import MIB
from tts_engine.runtime.rows import row_bytes
from tts_engine.synthesis import TTSModel


def test_bench_memory_accounts_for_each_level_in_a_fresh_engine(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "memory.json"
    assert main(["bench", "memory", "--model-dir", str(tiny_model_dir), "--device", "cpu",
                 "--max-batch", "2", "--out", str(out)]) == 0
    [row] = json.loads(out.read_text())["rows"]
    assert (row["max_batch"], row["rows"], row["positions"], row["device"]) == (2, 2, 1024, "cpu")
    assert row["rows_x_positions"] == "2 x 1024" and row["error"] is None and row["capacity"] >= 1
    measured = ("weights", "rows", "graphs", "workspace", "reserved", "peak_reserved",
                "outside_torch")
    assert {row[f"{part}_mib"] for part in measured} == {0}
    model = TTSModel(tiny_model_dir)
    assert row["row_pool_mib"] * MIB == 2 * row_bytes(model.codegen,
                                                      CodecStreamDecoder(model.decoder), 1024)
    assert "engine memory at start-up per maximum batch" in capsys.readouterr().out


def test_bench_metrics_gives_both_variants_and_their_difference(tiny_model_dir, tmp_path):
    out = tmp_path / "metrics.json"
    assert main(["bench", "metrics", "--model-dir", str(tiny_model_dir), "--device", "cpu",
                 "--concurrency", "1", "--length", "short", "--repeats", "1",
                 "--out", str(out)]) == 0
    on, off, diff = json.loads(out.read_text())["rows"]
    assert [r["packet_metrics"] for r in (on, off, diff)] == ["on", "off", "on - off"]
    # short replies: 50 frames, a first packet of 1 frame, then packets of 2
    assert (on["packets_logged_per_stream"], off["packets_logged_per_stream"]) == (26, 0)
    assert on["rounds"] == off["rounds"] == 1
    assert diff["ms_per_frame_p50"] == on["ms_per_frame_p50"] - off["ms_per_frame_p50"]
