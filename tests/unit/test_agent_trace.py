"""The trace collector (an event-bus observer) and `python -m agent.trace_summary`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from agent.events import (
    TRACE_POINTS,
    CancelCascade,
    Event,
    EventBus,
    FirstAudioPublished,
    FirstSegment,
    Interrupted,
    LaneWait,
    LlmFirstToken,
    LlmRequest,
    Payload,
    ReplyBegin,
    ReplyEnd,
    SttEnd,
    SttStart,
    TtsFirstPacket,
    VadEnd,
)
from agent.trace import TraceCollector
from agent.trace_summary import load_points, main, summarize
from streamtalk_common.paths import REPO_ROOT


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def advance(self, ms: float) -> None:
        self.t += ms / 1000.0

    def mono(self) -> float:
        return self.t

    def wall(self) -> float:
        return 1_700_000_000.0 + self.t


def setup(tmp_path: Path) -> tuple[EventBus, TraceCollector, Clock]:
    clock = Clock()
    bus = EventBus(wall_clock=clock.wall, mono_clock=clock.mono)
    collector = TraceCollector(tmp_path / "traces", "room/1", "trace-1")
    bus.subscribe(collector)
    return bus, collector, clock


USER_SPEECH: tuple[Payload, ...] = (VadEnd(speech_s=1.0, silence_s=0.4), SttStart(audio_s=1.0),
                                     SttEnd(ok=True))
REPLY_START: tuple[Payload, ...] = (
    LlmRequest(max_tokens=40), LlmFirstToken(), FirstSegment(chars=12, reason="starter"),
    TtsFirstPacket(ttfa_ms=90.0, queue_wait_ms=0.0), FirstAudioPublished())


def reply_begin(speech: str) -> ReplyBegin:
    return ReplyBegin(speech_id=speech, source="generate_reply", user_initiated=False)


def a_turn(bus: EventBus, clock: Clock, speech: str, *, interrupt: bool = False) -> None:
    for point in USER_SPEECH:
        bus.emit(point)
        clock.advance(100)
    bus.emit(reply_begin(speech))
    for point in REPLY_START:
        bus.emit(point)
        clock.advance(50)
    bus.emit(LaneWait(lane="fast", requested="fast", wait_ms=0.0, segment=0, slack_s=0.0))
    if interrupt:
        bus.emit(Interrupted(speech_id=speech, reason="stop_reply"))
    clock.advance(1000)
    bus.emit(ReplyEnd(speech_id=speech, audio=True, interrupted=interrupt, position_s=1.0))


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_each_turn_gets_its_points_once_in_the_documented_format(tmp_path: Path) -> None:
    bus, collector, clock = setup(tmp_path)
    a_turn(bus, clock, "s1")
    bus.emit(LlmRequest(max_tokens=40))  # a continuation request of the same reply: not a new point
    a_turn(bus, clock, "s2", interrupt=True)
    collector.close()
    assert collector.path.name == "room_1.jsonl"  # a safe file name
    events = read(collector.path)
    assert all(set(e) == {"trace_id", "room", "turn", "point", "t_wall_ms", "t_mono_ms"}
               for e in events)
    assert ({e["trace_id"] for e in events} == {"trace-1"}
            and {e["room"] for e in events} == {"room/1"})
    turn1 = [e["point"] for e in events if e["turn"] == 1]
    turn2 = [e["point"] for e in events if e["turn"] == 2]
    assert turn1 == [p for p in TRACE_POINTS if p is not Event.INTERRUPTED]  # in turn order
    assert set(turn2) == set(TRACE_POINTS)
    t = {e["point"]: e["t_mono_ms"] for e in events if e["turn"] == 1}
    assert t["stt_start"] - t["vad_end"] == pytest.approx(100)
    assert events[0]["t_wall_ms"] - events[0]["t_mono_ms"] == pytest.approx(1_700_000_000_000)


def test_a_reply_interrupted_by_the_next_turn_keeps_its_own_turn(tmp_path: Path) -> None:
    bus, collector, clock = setup(tmp_path)
    a_turn(bus, clock, "s1")
    # turn 2's reply is playing when the user talks over it (turn 3 begins)
    for point in USER_SPEECH:
        bus.emit(point)
    bus.emit(reply_begin("s2"))
    bus.emit(FirstAudioPublished())
    for point in USER_SPEECH:  # barge-in: turn 3
        bus.emit(point)
    bus.emit(reply_begin("s3"))  # the answer to turn 3 starts first...
    bus.emit(Interrupted(speech_id="s2", reason="barge-in confirmed"))  # ...then turn 2's
    bus.emit(CancelCascade(speech_id="s2", reason="barge-in confirmed", audio_stop_ms=0.1,
                           tts_streams=1, tts_cancel_ms=0.5, llm_streams=1, llm_cancel_ms=2.0,
                           total_ms=12.0))  # reply reports its cancellation
    bus.emit(ReplyEnd(speech_id="s2", audio=True, interrupted=True, position_s=0.5))
    bus.emit(FirstAudioPublished())
    collector.close()
    events = read(collector.path)
    assert ("interrupted", 2) in {(e["point"], e["turn"]) for e in events}
    assert ("reply_end", 2) in {(e["point"], e["turn"]) for e in events}
    assert ("first_audio_published", 3) in {(e["point"], e["turn"]) for e in events}
    metrics = read(collector.metrics_path)
    m2 = [m for m in metrics if m["turn"] == 2][0]
    assert m2["interrupted"] is True and m2["cancel_cascade"][0]["total_ms"] == 12.0


def test_metrics_line_per_reply(tmp_path: Path) -> None:
    bus, collector, clock = setup(tmp_path)
    a_turn(bus, clock, "s1")
    collector.close()
    (m,) = read(collector.metrics_path)
    assert m["turn"] == 1 and m["lane_wait"][0]["lane"] == "fast"


def test_summary_reports_p50_p95(tmp_path: Path) -> None:
    bus, collector, clock = setup(tmp_path)
    for i in range(10):
        a_turn(bus, clock, f"s{i}")
    collector.close()
    summary = summarize(load_points([collector.path]))
    assert summary["turns"] == 10
    stt = summary["intervals"]["stt"]
    assert (stt["n"] == 10 and stt["p50_ms"] == pytest.approx(100)
            and stt["p95_ms"] == pytest.approx(100))
    e2e = summary["intervals"]["eot_to_first_audio"]
    assert e2e["p50_ms"] == pytest.approx(3 * 100 + 4 * 50)
    assert summary["intervals"]["interrupt_to_reply_end"]["n"] == 0


def test_summary_command_prints_a_table_and_writes_json(tmp_path: Path) -> None:
    bus, collector, clock = setup(tmp_path)
    for i in range(3):
        a_turn(bus, clock, f"s{i}", interrupt=i == 2)
    collector.close()
    out = tmp_path / "summary.json"
    proc = subprocess.run(
        [sys.executable, "-m", "agent.trace_summary", str(collector.path),
         str(collector.metrics_path), "--json", str(out)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=True)
    assert "fast_lane_ttft" in proc.stdout and "P95 ms" in proc.stdout
    assert "turns: 3  interrupted: 1" in proc.stdout
    data = json.loads(out.read_text())
    assert data["intervals"]["fast_lane_ttft"]["p50_ms"] == pytest.approx(50)


def test_summary_rejects_a_file_that_is_not_a_trace(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"hello": 1}\n')
    assert main([str(bad)]) == 2
    assert "bad.jsonl:1: not a trace event" in capsys.readouterr().err
