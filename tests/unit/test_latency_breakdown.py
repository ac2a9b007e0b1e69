"""The per-turn latency breakdown: its segments from trace points, and the agent's publisher
that listens to the trace collector (no services needed)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from test_agent_trace import a_turn, read, reply_begin, setup

from agent.events import TRACE_POINTS, FirstAudioPublished
from agent.latency_publisher import LatencyPublisher
from streamtalk_common.latency_breakdown import POINTS, SEGMENTS, LatencyBreakdown

TURN = {"vad_end": 1000.0, "stt_end": 1560.0, "llm_first_token": 1900.0,
        "tts_first_packet": 1950.5, "first_audio_published": 1952.0}


def test_segments_chain_the_points_and_add_up_to_the_whole() -> None:
    b = LatencyBreakdown.from_points(3, {**TURN, "stt_start": 1001.0, "reply_end": 9000.0})
    assert b is not None
    assert b.segments_ms() == {"stt": 560.0, "llm": 340.0, "tts": 50.5, "publish": 1.5}
    assert b.total_ms == pytest.approx(TURN["first_audio_published"] - TURN["vad_end"])
    assert [a for _, a, _ in SEGMENTS][1:] == [b for _, _, b in SEGMENTS][:-1]  # a chain
    assert json.loads(b.to_json()) == {"type": "turn_latency", "turn": 3, "total_ms": 952.0,
                                       "segments_ms": b.segments_ms()}


def test_the_segments_run_between_agent_trace_points_in_turn_order() -> None:
    assert [TRACE_POINTS.index(p) for p in POINTS] == sorted(TRACE_POINTS.index(p) for p in POINTS)


@pytest.mark.parametrize("missing", POINTS)
def test_a_turn_without_every_point_has_no_breakdown(missing: str) -> None:
    assert LatencyBreakdown.from_points(1, {p: t for p, t in TURN.items() if p != missing}) is None


async def test_the_publisher_sends_each_turn_once_as_the_trace_has_it(tmp_path: Path) -> None:
    bus, collector, clock = setup(tmp_path)
    sent: list[str] = []

    async def send(payload: str) -> None:
        sent.append(payload)

    publisher = LatencyPublisher(send)
    collector.subscribe_points(publisher)
    bus.emit(reply_begin("greeting"))  # a greeting: no user turn, nothing to send
    bus.emit(FirstAudioPublished())
    a_turn(bus, clock, "s1")
    bus.emit(FirstAudioPublished())  # the same turn again: the trace keeps the first only
    a_turn(bus, clock, "s2", interrupt=True)
    await asyncio.sleep(0)
    collector.close()
    payloads = [json.loads(s) for s in sent]
    assert [p["turn"] for p in payloads] == [1, 2]
    points = {}
    for e in read(collector.path):
        points.setdefault(e["turn"], {})[e["point"]] = e["t_mono_ms"]
    for p in payloads:  # exactly the trace file's intervals
        assert LatencyBreakdown.from_points(p["turn"], points[p["turn"]]).to_dict() == p
    assert payloads[0]["segments_ms"] == {"stt": 200.0, "llm": 150.0, "tts": 100.0, "publish": 50.0}
    assert [b.turn for b in publisher.published] == [1, 2]


async def test_a_failing_send_is_logged_and_the_trace_goes_on(tmp_path: Path, caplog) -> None:
    bus, collector, clock = setup(tmp_path)

    async def send(payload: str) -> None:
        raise ConnectionError("room gone")

    collector.subscribe_points(LatencyPublisher(send))
    a_turn(bus, clock, "s1")
    await asyncio.sleep(0)
    a_turn(bus, clock, "s2")
    await asyncio.sleep(0)
    collector.close()
    assert "cannot publish the latency of turn 1: room gone" in caplog.text
    assert {e["turn"] for e in read(collector.path)} == {1, 2}
