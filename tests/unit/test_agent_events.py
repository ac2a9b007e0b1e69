"""The event contracts (agent/events.py): one payload dataclass per event, emitted as such,
dispatched by type, written to the trace as before, listed in docs/AGENT.md."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest

from agent.events import (
    PAYLOADS,
    AgentEvent,
    AudioCleared,
    AudioPaused,
    AudioResumed,
    BackendBusy,
    BackendDown,
    BargeIn,
    BargeInPaused,
    CancelCascade,
    Event,
    EventBus,
    FalseInterruption,
    FirstAudioPublished,
    FirstSegment,
    GpuLanes,
    Interrupted,
    LaneWait,
    LlmCancelled,
    LlmDone,
    LlmFirstToken,
    LlmRequest,
    Payload,
    PlaybackFinished,
    ReplyBegin,
    ReplyEnd,
    ReplyPayload,
    Role,
    SttEnd,
    SttResult,
    SttStart,
    TtsCancelled,
    TtsError,
    TtsFirstPacket,
    TtsHeld,
    TtsSegment,
    VadEnd,
    VadStart,
)
from agent.trace import TraceCollector
from streamtalk_common.paths import REPO_ROOT


def test_every_event_has_one_frozen_payload_named_after_it() -> None:
    assert set(PAYLOADS) == set(Event) and {e.role for e in Event} == set(Role)
    for event, cls in PAYLOADS.items():
        assert cls.event is event
        assert dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen  # type: ignore[attr-defined]
        assert cls.__name__ == event.value.title().replace("_", ""), cls.__name__
    with pytest.raises(dataclasses.FrozenInstanceError):
        AudioPaused(held_back_s=0.2).held_back_s = 0.3  # type: ignore[misc]


def test_an_emit_with_a_wrong_or_missing_field_fails_at_the_emit_site() -> None:
    bus = EventBus()
    seen: list[AgentEvent] = []
    bus.subscribe(seen.append)
    with pytest.raises(TypeError, match="unexpected keyword argument 'dropped'"):
        bus.emit(AudioCleared(dropped=1.0, clear_ms=0.5))  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="missing 1 required positional argument: 'clear_ms'"):
        bus.emit(AudioCleared(dropped_s=1.0))  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="emitted as their payload"):
        bus.emit("audio_cleared")  # type: ignore[arg-type, type-var]
    with pytest.raises(TypeError, match="emitted as their payload"):
        bus.emit(ReplyPayload(speech_id="s1"))  # a base of payloads, no event's own
    with pytest.raises(TypeError, match="no event's payload"):
        bus.on(ReplyPayload, seen.append)
    assert seen == []
    with pytest.raises(TypeError, match="two payloads"):
        @dataclasses.dataclass(frozen=True)
        class AnotherAudioCleared(Payload):
            event = Event.AUDIO_CLEARED
    assert PAYLOADS[Event.AUDIO_CLEARED] is AudioCleared


def test_dispatch_by_type_reaches_only_the_handlers_of_that_type() -> None:
    bus = EventBus()
    calls: list[tuple[str, Payload]] = []

    def on_cleared(ev: AgentEvent[AudioCleared]) -> None:
        calls.append(("cleared", ev.payload))

    def on_paused(ev: AgentEvent[AudioPaused]) -> None:
        calls.append(("paused", ev.payload))

    def broken(ev: AgentEvent[AudioPaused]) -> None:
        raise RuntimeError("an observer's bug")

    bus.on(AudioCleared, on_cleared)
    bus.on(AudioPaused, broken)  # logged; the others still hear the event
    bus.subscribe(lambda ev: calls.append(("every", ev.payload)))
    bus.on(AudioPaused, on_paused)
    cleared, paused = AudioCleared(dropped_s=2.5, clear_ms=0.75), AudioPaused(held_back_s=0.2)
    ev = bus.emit(cleared)
    assert ev.name is Event.AUDIO_CLEARED and ev.payload.dropped_s == 2.5
    bus.emit(paused)
    bus.emit(AudioResumed(queued_s=0.0))
    assert calls == [("cleared", cleared), ("every", cleared), ("every", paused),
                     ("paused", paused), ("every", AudioResumed(queued_s=0.0))]
    calls.clear()
    bus.unsubscribe(on_paused)
    bus.emit(paused)
    assert calls == [("every", paused)]


# The metrics lines of the scenario below as the trace wrote them when payloads were keyword
# arguments: tools/autortc and docs/AGENT.md rely on these names and values.
METRICS_LINES = [
    ('{"trace_id": "trace-1", "room": "room/1", "turn": 1, "t_wall_ms": 1700000101200.0, '
     '"speech_id": "s1", "audio": true, "interrupted": true, "position_s": 1.1, '
     '"stt_result": [{"t_mono_ms": 100200.0, "text": "héllo there", "ms": 80.5, '
     '"audio_s": 1.2}], "lane_wait": [{"t_mono_ms": 100450.0, "lane": "fast", '
     '"requested": "fast", "wait_ms": 0.0, "segment": 0, "slack_s": 0.0}], '
     '"tts_held": [{"t_mono_ms": 100600.0, "segment": 1, "held_ms": 12.5}], '
     '"tts_segment": [{"t_mono_ms": 100650.0, "segment": 0, "chars": 12, "ttfa_ms": 95.25, '
     '"audio_s": 1.36, "packets": 17}], "gpu_lanes": [{"t_mono_ms": 100700.0, '
     '"fast": {"acquired": 2, "waited": 0, "promoted": 0, "active": 0, "wait_ms_p50": 0.0, '
     '"wait_ms_p95": 0.0, "wait_ms_max": 0.0}, "slow": {"acquired": 0, "waited": 0, '
     '"promoted": 0, "active": 0, "wait_ms_p50": null, "wait_ms_p95": null, '
     '"wait_ms_max": null}}], "audio_paused": [{"t_mono_ms": 100750.0, "held_back_s": 0.2}], '
     '"barge_in": [{"t_mono_ms": 100800.0, "during": "SPEAKING"}], '
     '"barge_in_paused": [{"t_mono_ms": 100850.0, "detect_to_pause_ms": 3.25}], '
     '"audio_cleared": [{"t_mono_ms": 100900.0, "dropped_s": 2.5, "clear_ms": 0.75}], '
     '"tts_cancelled": [{"t_mono_ms": 101000.0, "engine_stop_ms": 8.5, '
     '"stop_reason": "cancelled", "audio_s": 1.36}], '
     '"llm_cancelled": [{"t_mono_ms": 101050.0, "chars": 30}], '
     '"cancel_cascade": [{"t_mono_ms": 101100.0, "speech_id": "s1", '
     '"reason": "barge-in confirmed", "audio_stop_ms": 0.1, "tts_streams": 1, '
     '"tts_cancel_ms": 0.5, "llm_streams": 1, "llm_cancel_ms": 2.0, "total_ms": 10.0, '
     '"detect_to_cascade_ms": 40.0}]}'),
    ('{"trace_id": "trace-1", "room": "room/1", "turn": 2, "t_wall_ms": 1700000101750.0, '
     '"speech_id": "s2", "audio": false, "interrupted": true, '
     '"backend_down": [{"t_mono_ms": 101400.0, "component": "llm", '
     '"detail": "connection refused"}], "backend_busy": [{"t_mono_ms": 101450.0, '
     '"component": "tts", "segment": 0, "code": "over_capacity", "detail": "full"}], '
     '"tts_error": [{"t_mono_ms": 101500.0, "segment": 1, "code": "bad_text", '
     '"detail": "empty"}], "llm_done": [{"t_mono_ms": 101550.0, "finish": "error", '
     '"requests": 1, "chars": 0, "ttft_ms": null, "ms": 12.5}], '
     '"audio_resumed": [{"t_mono_ms": 101600.0, "queued_s": 0.0}], '
     '"false_interruption": [{"t_mono_ms": 101650.0, "paused": false}], '
     '"cancel_cascade": [{"t_mono_ms": 101700.0, "speech_id": "s2", '
     '"reason": "stop_reply from u", "audio_stop_ms": 0.1, "tts_streams": 0, '
     '"tts_cancel_ms": 0.2, "llm_streams": 1, "llm_cancel_ms": 1.0, "total_ms": 3.0}]}'),
    ('{"trace_id": "trace-1", "room": "room/1", "turn": 0, "t_wall_ms": 0.0, '
     '"vad_start": [{"t_mono_ms": 100000.0, "speech_s": 0.25, "inference_ms": 1.5}]}'),
]


def test_the_trace_writes_the_payloads_as_before(tmp_path: Path) -> None:
    t = [100.0]
    bus = EventBus(wall_clock=lambda: 1_700_000_000.0 + t[0], mono_clock=lambda: t[0])
    collector = TraceCollector(tmp_path, "room/1", "trace-1")
    bus.subscribe(collector)
    lanes = {"acquired": 2, "waited": 0, "promoted": 0, "active": 0, "wait_ms_p50": 0.0,
             "wait_ms_p95": 0.0, "wait_ms_max": 0.0}
    idle = {"acquired": 0, "waited": 0, "promoted": 0, "active": 0, "wait_ms_p50": None,
            "wait_ms_p95": None, "wait_ms_max": None}
    scenario: list[Payload] = [
        VadStart(speech_s=0.25, inference_ms=1.5),
        VadEnd(speech_s=1.2, silence_s=0.4),
        SttStart(audio_s=1.2),
        SttEnd(ok=True),
        SttResult(text="héllo there", ms=80.5, audio_s=1.2),
        ReplyBegin(speech_id="s1", source="generate_reply", user_initiated=False),
        LlmRequest(max_tokens=40),
        LlmFirstToken(),
        FirstSegment(chars=12, reason="starter"),
        LaneWait(lane="fast", requested="fast", wait_ms=0.0, segment=0, slack_s=0.0),
        TtsFirstPacket(ttfa_ms=95.25, queue_wait_ms=None),
        FirstAudioPublished(),
        TtsHeld(segment=1, held_ms=12.5),
        TtsSegment(segment=0, chars=12, ttfa_ms=95.25, audio_s=1.36, packets=17),
        GpuLanes(fast=lanes, slow=idle),
        AudioPaused(held_back_s=0.2),
        BargeIn(during="SPEAKING"),
        BargeInPaused(detect_to_pause_ms=3.25),
        AudioCleared(dropped_s=2.5, clear_ms=0.75),
        Interrupted(speech_id="s1", reason="barge-in confirmed"),
        TtsCancelled(engine_stop_ms=8.5, stop_reason="cancelled", audio_s=1.36),
        LlmCancelled(chars=30),
        CancelCascade(speech_id="s1", reason="barge-in confirmed", audio_stop_ms=0.1,
                      tts_streams=1, tts_cancel_ms=0.5, llm_streams=1, llm_cancel_ms=2.0,
                      total_ms=10.0, detect_to_cascade_ms=40.0),
        PlaybackFinished(interrupted=True, position_s=1.1),
        ReplyEnd(speech_id="s1", audio=True, interrupted=True, position_s=1.1),
        # a reply without audio, stopped by the RPC: no position, no detect_to_cascade_ms
        VadEnd(speech_s=0.8, silence_s=0.4),
        ReplyBegin(speech_id="s2", source="generate_reply", user_initiated=False),
        LlmRequest(max_tokens=40),
        BackendDown(component="llm", detail="connection refused"),
        BackendBusy(component="tts", segment=0, code="over_capacity", detail="full"),
        TtsError(segment=1, code="bad_text", detail="empty"),
        LlmDone(finish="error", requests=1, chars=0, ttft_ms=None, ms=12.5),
        AudioResumed(queued_s=0.0),
        FalseInterruption(paused=False),
        CancelCascade(speech_id="s2", reason="stop_reply from u", audio_stop_ms=0.1,
                      tts_streams=0, tts_cancel_ms=0.2, llm_streams=1, llm_cancel_ms=1.0,
                      total_ms=3.0),
        ReplyEnd(speech_id="s2", audio=False, interrupted=True),
    ]
    for payload in scenario:
        bus.emit(payload)
        t[0] += 0.05
    collector.close()
    assert collector.metrics_path.read_text(encoding="utf-8").splitlines() == METRICS_LINES
    points = [json.loads(line) for line in collector.path.read_text().splitlines()]
    assert [(p["turn"], p["point"], p["t_mono_ms"]) for p in points] == [
        (1, "vad_end", 100050.0), (1, "stt_start", 100100.0), (1, "stt_end", 100150.0),
        (1, "llm_request", 100300.0), (1, "llm_first_token", 100350.0),
        (1, "first_segment", 100400.0), (1, "tts_first_packet", 100500.0),
        (1, "first_audio_published", 100550.0), (1, "interrupted", 100950.0),
        (1, "reply_end", 101200.0), (2, "vad_end", 101250.0), (2, "llm_request", 101350.0),
        (2, "reply_end", 101750.0)]


def _doc_rows() -> dict[str, list[tuple[str, list[str]]]]:
    """The rows of the events section's tables in docs/AGENT.md, by each event their first
    cell names, each with its table's first heading (`point` or `event`) and its cells."""
    text = (REPO_ROOT / "docs" / "AGENT.md").read_text()
    section = text.split("## A turn, point by point", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, list[tuple[str, list[str]]]] = {}
    table = ""
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| `"):
            for name in re.findall(r"`(\w+)`", cells[0]):
                rows.setdefault(name, []).append((table, cells))
        elif line.startswith("| "):
            table = cells[0]
    return rows


def test_docs_list_every_event_with_its_role_and_the_fields_of_its_payload() -> None:
    rows = _doc_rows()
    for event, cls in PAYLOADS.items():
        assert len(rows.get(event.value, [])) == 1, f"docs/AGENT.md: one row for `{event}`"
        ((table, cells),) = rows[event.value]
        if event.role in (Role.USER_POINT, Role.REPLY_POINT):
            assert table == "point", f"docs/AGENT.md: `{event}` belongs in the points' table"
        else:
            assert table == "event" and cells[1].startswith(event.role.value), cells
        missing = [f.name for f in dataclasses.fields(cls) if f"`{f.name}`" not in cells[-1]]
        assert not missing, f"docs/AGENT.md: the row of `{event}` lacks the fields {missing}"
