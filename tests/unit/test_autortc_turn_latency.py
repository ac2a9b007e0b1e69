"""AutoRTC's per-case breakdown of the agent's turn (stt, llm, tts, publish) from the agent
trace the suite copies into each case folder, and its table in report.md (no services)."""

from __future__ import annotations

import json
from pathlib import Path

from test_autortc_metrics import _case_dir, _row

from tools.autortc import audio_metrics as am
from tools.autortc import gates, report


def with_full_trace(d: Path) -> Path:
    t0 = 1_000_000.0
    points = {"vad_end": t0 - 900, "stt_start": t0 - 899, "stt_end": t0 - 400,
              "llm_request": t0 - 200, "llm_first_token": t0 - 150,
              "first_segment": t0 - 149, "tts_first_packet": t0 - 40,
              "first_audio_published": t0 - 38.5}
    lines = [{"turn": 1, "point": p, "t_wall_ms": t} for p, t in points.items()]
    lines.append({"turn": 2, "point": "vad_end", "t_wall_ms": t0})  # another turn: not this case's
    (d / "agent_trace.jsonl").write_text("\n".join(json.dumps(e) for e in lines) + "\n")
    return d


def test_case_metrics_carry_the_agents_breakdown_of_the_turn(tmp_path: Path) -> None:
    row = am.case_metrics(with_full_trace(_case_dir(tmp_path)), {"id": "c", "priority": "P0"})
    assert row["agent_turn_latency_ms"] == {"stt": 500.0, "llm": 250.0, "tts": 110.0,
                                            "publish": 1.5}
    # a trace without the STT points (as the shorter fixture has) gives no breakdown
    partial = am.case_metrics(_case_dir(tmp_path / "p"), {"id": "c", "priority": "P0"})
    assert "agent_turn_latency_ms" not in partial


def test_report_shows_the_breakdown_per_case_and_its_median(tmp_path: Path) -> None:
    rows = [_row(case_id="hello", agent_turn_latency_ms={"stt": 500.0, "llm": 250.0,
                                                         "tts": 110.0, "publish": 1.5}),
            _row(case_id="long", agent_turn_latency_ms={"stt": 700.0, "llm": 50.0,
                                                        "tts": 90.0, "publish": 2.5}),
            _row(case_id="no-trace")]
    report.write_all(tmp_path, rows, {**gates.evaluate(rows, gates.load_profile("ci"), None),
                                      "run": {}})
    md = (tmp_path / "report.md").read_text()
    section = md[md.index("## Turn latency in the agent"):md.index("## Cases")]
    assert "| case | stt ms | llm ms | tts ms | publish ms | total ms |" in section
    assert "| hello | 500 | 250 | 110 | 1.5 | 861.5 |" in section
    assert "| long | 700 | 50 | 90 | 2.5 | 842.5 |" in section
    assert "| median of 2 | 600 | 150 | 100 | 2 | - |" in section
    assert "no-trace" not in section
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["rows"][0]["agent_turn_latency_ms"]["stt"] == 500.0


def test_report_without_breakdowns_has_no_empty_section(tmp_path: Path) -> None:
    rows = [_row()]
    report.write_all(tmp_path, rows, {**gates.evaluate(rows, gates.load_profile("ci"), None),
                                      "run": {}})
    assert "Turn latency in the agent" not in (tmp_path / "report.md").read_text()
