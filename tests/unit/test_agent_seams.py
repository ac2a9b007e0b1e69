"""The agent's components on the fakes of their seams (support/fake_engine.py, fake_omni.py,
fake_room.py), and the fakes against the real surfaces they stand in for, so that a change
of the engine, the Omni client or the LiveKit SDK shows here and not as a fake that passes
what the real thing would fail."""

from __future__ import annotations

import asyncio
import base64
import inspect
import io
import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from livekit import rtc
from livekit.agents import AgentSession
from livekit.agents import llm as lk_llm
from support.fake_engine import FakeEngine
from support.fake_omni import FakeOmniClient
from support.fake_room import (
    FakeLocalParticipant,
    FakeRemoteParticipant,
    FakeRoom,
    FakeTrackPublication,
)

from agent.bridge import TextBridge
from agent.events import AgentEvent, BackendBusy, BackendDown, BackendOk, EventBus, TtsSegment
from agent.llm import CONTINUE_BODY, OmniLLM
from agent.omni_client import TRANSCRIBE_PROMPT, OmniClient
from agent.room_agent import BACKEND_ATTRIBUTE, BackendStatus, ConnectionRestartWatch, people_in
from agent.stt import OmniSTT
from agent.tts import StreamtalkTTS
from streamtalk_common.audio import SAMPLE_RATE, read_wav, to_pcm16
from tts_engine.runtime import StreamHandle, TTSEngine

# --------------------------------------------------------------------------- the fakes' surfaces


def call_shape(fn: Callable[..., Any]) -> tuple[str, list[tuple[str, Any]]]:
    """How a method is called: plain, coroutine or async generator, and its parameters."""
    kind = ("async generator" if inspect.isasyncgenfunction(fn)
            else "coroutine" if inspect.iscoroutinefunction(fn) else "plain")
    return kind, [(p.name, p.kind) for p in inspect.signature(fn).parameters.values()]


SURFACES = {  # fake: (the real class, its calls and attributes the agent uses, a fake to look at)
    "engine": (TTSEngine, ["make_request", "open_stream", "wake"],
               ["speakers", "languages", "capacity", "active_sessions"], FakeEngine),
    "omni client": (OmniClient, ["stream_chat", "complete_chat", "transcribe", "aclose"], [],
                    FakeOmniClient),
    "room": (rtc.Room, ["on", "off"], ["name", "local_participant", "remote_participants"],
             FakeRoom),
    "local participant": (rtc.LocalParticipant,
                          ["set_attributes", "publish_track", "unpublish_track"],
                          ["attributes"], FakeLocalParticipant),
    "track publication": (rtc.LocalTrackPublication, ["wait_for_subscription"], ["sid"],
                          lambda: FakeTrackPublication("TR_x")),
    "remote participant": (rtc.RemoteParticipant, [], ["identity", "kind"],
                           lambda: FakeRemoteParticipant("user")),
}


@pytest.mark.parametrize("seam", SURFACES)
def test_each_fake_is_called_as_the_real_thing_is(seam: str) -> None:
    real, calls, attributes, make = SURFACES[seam]
    fake = make()
    for name in calls:
        assert call_shape(getattr(type(fake), name)) == call_shape(getattr(real, name)), name
    for name in attributes:
        assert hasattr(real, name) and hasattr(fake, name), name


# ------------------------------------------------------------------------- the engine under the TTS


def recorder() -> tuple[EventBus, list[AgentEvent]]:
    bus, seen = EventBus(), []
    bus.subscribe(seen.append)
    return bus, seen


async def test_the_tts_sends_the_engines_packets_whole_and_in_order() -> None:
    engine = FakeEngine()
    tts = StreamtalkTTS(engine, speaker="Ryan", language="english", frame_ms=20)
    async with tts.synthesize("Good morning. The weather is fine today, "
                              "so let us go out.") as reply:
        frames = [ev.frame async for ev in reply]
    assert len(engine.requests) >= 2  # the starter first, then the rest
    assert {(r.speaker, r.language) for r in engine.requests} == {("ryan", "english")}
    heard = np.concatenate([np.frombuffer(f.data, np.int16) for f in frames])
    made = np.concatenate([engine.audio(r.text) for r in engine.requests])
    assert np.array_equal(heard[:len(made)], to_pcm16(made))
    assert not heard[len(made):].any()
    assert max(f.samples_per_channel for f in frames) == SAMPLE_RATE // 50  # AGENT_FRAME_MS at most
    assert engine.active_sessions == 0


def heard(frames: list[rtc.AudioFrame]) -> np.ndarray:
    return np.concatenate([np.frombuffer(f.data, np.int16) for f in frames])


async def reply(tts: StreamtalkTTS, text: str) -> list[rtc.AudioFrame]:
    """The frames of one reply streamed as the framework streams the LLM's text."""
    stream = tts.stream()
    stream.push_text(text)
    stream.end_input()
    async with stream:
        return [ev.frame async for ev in stream]


def take_the_only_stream(engine: FakeEngine) -> StreamHandle:
    """Another room's long reply takes the engine's only stream."""
    request = engine.make_request("Another room's long reply takes the only stream.", "serena")
    return engine.open_stream(request)


async def test_a_reply_the_engine_has_no_room_for_is_answered_silently_and_shown(
        caplog: pytest.LogCaptureFixture) -> None:
    engine = FakeEngine(capacity=1, packet_interval_s=1.0)
    other_room = take_the_only_stream(engine)
    bus, seen = recorder()
    tts = StreamtalkTTS(engine, bus=bus)
    try:
        frames = await reply(tts, "Hello.")  # the framework's retries on: none is needed
    finally:
        other_room.cancel()
    busy = [e.payload for e in seen if isinstance(e.payload, BackendBusy)]
    assert [(b.component, b.segment, b.code) for b in busy] == [("tts", 0, "over_capacity")]
    assert "retry in 1 s" in busy[0].detail  # the engine's own words
    assert frames and not heard(frames).any()
    assert engine.requests == [other_room.session.request]
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "retry in 1 s" in warnings[0].getMessage()


async def test_a_reply_refused_midway_keeps_its_audio_and_tries_no_further() -> None:
    engine = FakeEngine(capacity=1, packet_interval_s=0.01)
    bus, seen = recorder()
    others: list[StreamHandle] = []

    def room_full_after_the_first_segment(ev: AgentEvent[TtsSegment]) -> None:
        if ev.payload.segment == 0:
            others.append(take_the_only_stream(engine))

    bus.on(TtsSegment, room_full_after_the_first_segment)
    tts = StreamtalkTTS(engine, bus=bus)
    text = "Good morning. The weather is fine today. Let us go for a walk."
    bridge = TextBridge(tts.bridge_options)
    assert len(bridge.push(text) + bridge.flush()) > 2
    try:
        frames = await reply(tts, text)
    finally:
        others[0].cancel()
    first, other = engine.requests  # the segments after the refused one were not tried
    assert other is others[0].session.request
    made = to_pcm16(engine.audio(first.text))
    assert np.array_equal(heard(frames)[:len(made)], made) and not heard(frames)[len(made):].any()
    order = [e.name for e in seen if e.name in ("tts_first_packet", "backend_busy")]
    assert order == ["tts_first_packet", "backend_busy"]
    assert [e.payload.segment for e in seen if isinstance(e.payload, BackendBusy)] == [1]


async def test_the_next_reply_is_spoken_once_the_engine_has_room_again(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="streamtalk.tts")
    engine = FakeEngine(capacity=1, packet_interval_s=1.0)
    bus, seen = recorder()
    room = FakeRoom()
    bus.subscribe(BackendStatus(room, AgentSession(), "unused"))  # type: ignore[arg-type]
    tts = StreamtalkTTS(engine, bus=bus)
    other_room = take_the_only_stream(engine)
    assert not heard(await reply(tts, "Hello.")).any()
    assert not heard(await reply(tts, "Are you there?")).any()
    await until(lambda: room.local_participant.attributes.get(BACKEND_ATTRIBUTE, "")
                .startswith("busy: tts: "))
    other_room.cancel()
    await other_room.closed()
    engine.packet_interval_s = 0.0
    frames = await reply(tts, "Yes.")
    made = to_pcm16(np.concatenate([engine.audio(r.text) for r in engine.requests[1:]]))
    assert np.array_equal(heard(frames)[:len(made)], made)
    assert [(e.name, e.payload.component) for e in seen if e.name.startswith("backend")] == [
        ("backend_busy", "tts"), ("backend_busy", "tts"), ("backend_ok", "tts")]
    await until(lambda: room.local_participant.attributes[BACKEND_ATTRIBUTE] == "ok")
    assert [r.levelname for r in caplog.records if r.name == "streamtalk.tts"] == [
        "WARNING", "INFO", "INFO"]  # refused, still refused, room again


async def until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "the condition never held"
        await asyncio.sleep(0.01)


# ------------------------------------------------------ the Omni client under the LLM and STT


def user_asks(text: str) -> lk_llm.ChatContext:
    chat_ctx = lk_llm.ChatContext.empty()
    chat_ctx.add_message(role="user", content=text)
    return chat_ctx


async def test_a_reply_cut_at_the_first_cap_is_continued_without_repeating_its_start() -> None:
    # answers a continuation with the whole reply, as the dev backend does
    client = FakeOmniClient()
    llm = OmniLLM(client, first_max_tokens=3)
    async with llm.chat(chat_ctx=user_asks("How is the weather?")) as stream:
        text = "".join([chunk.delta.content async for chunk in stream if chunk.delta])
    assert text == client.reply
    first, second = client.chats
    assert first["max_tokens"] == 3 and first["extra_body"] is None
    assert first["messages"][-1] == {"role": "user", "content": "How is the weather?"}
    assert second["extra_body"] == CONTINUE_BODY
    assert second["messages"][-1] == {"role": "assistant", "content": "It is sunny"}


@pytest.mark.parametrize("mode", ["chat", "transcriptions"])
async def test_an_utterance_goes_to_recognition_as_a_wav_and_its_words_come_back_tidy(
    mode: str
) -> None:
    client = FakeOmniClient(transcript="  What is the   weather like today? ")
    stt = OmniSTT(client, mode=mode, language="en")
    pcm = (np.sin(np.arange(16000) / 5) * 8000).astype(np.int16)
    assert await stt.transcribe_frame(rtc.AudioFrame(pcm.tobytes(), 16000, 1, len(pcm))) == \
        "What is the weather like today?"
    [asked] = client.recognitions
    assert asked["via"] == mode
    if mode == "chat":
        system, user = asked["messages"]
        assert system == {"role": "system", "content": TRANSCRIBE_PROMPT}
        uri = user["content"][0]["audio_url"]["url"]
        wav = base64.b64decode(uri.removeprefix("data:audio/wav;base64,"))
    else:
        wav, language = asked["wav"], asked["language"]
        assert language == "en"
    samples, rate = read_wav(io.BytesIO(wav))
    assert rate == 16000 and np.array_equal(samples, pcm)


# --------------------------------------------------------------------------- the room


async def test_a_resumed_connection_keeps_the_job_and_a_new_session_leaves_the_room() -> None:
    room, left = FakeRoom(), []

    async def leave(reason: str) -> None:
        left.append(reason)

    ConnectionRestartWatch(room, leave)  # type: ignore[arg-type]
    room.join("user")
    room.emit("reconnecting")
    room.emit("reconnected")  # resumed: everyone stayed
    await asyncio.sleep(0)
    assert left == []
    room.emit("reconnecting")
    room.leave("user")  # a new session: the server lost everyone
    room.emit("reconnected")
    await asyncio.sleep(0)
    assert left == ["connection restarted"]


def test_the_people_in_a_room_are_its_participants_that_are_not_agents() -> None:
    room = FakeRoom()
    user = room.join("user")
    room.join("agent-other", kind=rtc.ParticipantKind.PARTICIPANT_KIND_AGENT)
    probe = room.join("autortc-probe")
    assert people_in(room) == [user, probe]  # type: ignore[arg-type]


async def test_the_backend_attribute_shows_a_components_problem_until_it_answers_again() -> None:
    bus, room = EventBus(), FakeRoom()
    status = BackendStatus(room, AgentSession(), "unused")  # type: ignore[arg-type]
    bus.subscribe(status)
    shown: list[str] = []
    for payload in [
        BackendOk(component="stt"),
        BackendBusy(component="tts", segment=0, code="over_capacity",
                    detail="no capacity for 2 s"),
        BackendOk(component="llm"),  # the LLM answering says nothing of the TTS
        BackendDown(component="llm", detail="connection refused"),
        BackendOk(component="llm"),
        BackendOk(component="tts"),
    ]:
        bus.emit(payload)
        shown.append(status.state)
        await until(lambda: room.local_participant.attributes.get(BACKEND_ATTRIBUTE)
                    == status.state)
    assert shown == ["ok", "busy: tts: no capacity for 2 s", "busy: tts: no capacity for 2 s",
                     "down: llm: connection refused", "busy: tts: no capacity for 2 s", "ok"]
