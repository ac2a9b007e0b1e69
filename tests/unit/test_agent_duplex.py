"""The duplex state machine (pure) and the controller that drives it: fakes of the voice
session and the audio sink, the real TTS and LLM of the agent on the fakes of the engine and
the Omni client (support/)."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from livekit import rtc
from livekit.agents import llm as lk_llm
from livekit.agents.voice.events import (
    AgentFalseInterruptionEvent,
    AgentStateChangedEvent,
    UserStateChangedEvent,
)
from support.fake_engine import FakeEngine
from support.fake_omni import FakeOmniClient

from agent.duplex import TRANSITIONS, DuplexEvent, DuplexState, DuplexStateMachine, Transition
from agent.duplex_controller import DuplexController
from agent.events import (
    AgentEvent,
    AudioCleared,
    AudioPaused,
    AudioResumed,
    EventBus,
    FirstAudioPublished,
    PlaybackFinished,
)
from agent.llm import OmniLLM
from agent.tts import StreamtalkTTS

S, E = DuplexState, DuplexEvent


def machine() -> tuple[DuplexStateMachine, list[Transition]]:
    ticks = itertools.count()
    m = DuplexStateMachine(wall_clock=lambda: 1000.0 + next(ticks), mono_clock=lambda: 5.0)
    seen: list[Transition] = []
    m.subscribe(seen.append)
    return m, seen


def test_a_full_turn_goes_round() -> None:
    m, seen = machine()
    for ev in (E.TURN_COMMITTED, E.AUDIO_STARTED, E.REPLY_DONE):
        m.handle(ev)
    assert [(t.source, t.target) for t in seen] == [
        (S.LISTENING, S.THINKING), (S.THINKING, S.SPEAKING), (S.SPEAKING, S.LISTENING)]
    assert [t.seq for t in seen] == [1, 2, 3]
    assert (seen[0].to_dict()["from"] == "LISTENING"
            and seen[0].to_dict()["event"] == "turn_committed")
    assert seen[1].t_wall_ms > seen[0].t_wall_ms


def test_barge_in_goes_through_interrupting_and_paused_to_listening() -> None:
    m, seen = machine()
    for ev in (E.TURN_COMMITTED, E.AUDIO_STARTED, E.USER_SPEECH, E.PAUSED, E.INTERRUPTED):
        m.handle(ev, reason=ev.value)
    assert [t.target for t in seen] == [S.THINKING, S.SPEAKING, S.INTERRUPTING, S.PAUSED,
                                        S.LISTENING]
    assert m.state is S.LISTENING


@pytest.mark.parametrize("before", [S.SPEAKING, S.THINKING])
def test_speech_too_short_to_pause_resumes_where_it_was(before: DuplexState) -> None:
    m, _ = machine()
    m.handle(E.TURN_COMMITTED)
    if before is S.SPEAKING:
        m.handle(E.AUDIO_STARTED)
    m.handle(E.USER_SPEECH)
    assert m.state is S.INTERRUPTING
    tr = m.handle(E.RESUMED, reason="no pause")
    assert tr is not None and tr.target is before and m.state is before


@pytest.mark.parametrize("via_candidate", [True, False])
def test_a_paused_false_interruption_resumes_speaking(via_candidate: bool) -> None:
    m, seen = machine()
    m.handle(E.TURN_COMMITTED)
    m.handle(E.AUDIO_STARTED)
    if via_candidate:  # VAD start of speech first, then the pause
        m.handle(E.USER_SPEECH)
    paused = m.handle(E.PAUSED)
    assert paused is not None and paused.target is S.PAUSED
    assert paused.to_dict()["to"] == "PAUSED"
    assert m.handle(E.PAUSED) is None  # already paused: no second transition
    assert m.handle(E.USER_SPEECH) is None and m.handle(E.STOP_REQUESTED) is None
    tr = m.handle(E.RESUMED, reason="no words")
    assert tr is not None and (tr.source, tr.target) == (S.PAUSED, S.SPEAKING)
    assert seen[-1] is tr


def test_a_paused_reply_can_give_way_to_the_next_turn() -> None:
    m, _ = machine()
    for ev in (E.TURN_COMMITTED, E.AUDIO_STARTED, E.PAUSED):
        m.handle(ev)
    assert m.handle(E.TURN_COMMITTED).target is S.THINKING


def test_stop_request_works_like_a_barge_in() -> None:
    m, _ = machine()
    m.handle(E.TURN_COMMITTED)
    m.handle(E.AUDIO_STARTED)
    assert m.handle(E.STOP_REQUESTED).target is S.INTERRUPTING
    assert m.handle(E.INTERRUPTED).target is S.LISTENING


def test_events_that_do_not_apply_change_nothing() -> None:
    m, seen = machine()
    for ev in (E.REPLY_DONE, E.USER_SPEECH, E.RESUMED, E.INTERRUPTED, E.PAUSED, E.STOP_REQUESTED):
        assert m.handle(ev) is None
    assert m.state is S.LISTENING and seen == []
    m.handle(E.TURN_COMMITTED)
    assert m.handle(E.TURN_COMMITTED) is None  # already thinking


def test_reset_always_returns_to_listening() -> None:
    for path in ([], [E.TURN_COMMITTED], [E.TURN_COMMITTED, E.AUDIO_STARTED, E.USER_SPEECH]):
        m, _ = machine()
        for ev in path:
            m.handle(ev)
        assert m.handle(E.RESET).target is S.LISTENING


def test_every_state_is_reachable_and_left() -> None:
    sources = {s for s, _ in TRANSITIONS}
    targets = set(TRANSITIONS.values())
    assert sources == targets == set(DuplexState)
    assert all(m.can_handle(E.RESET) for m in [DuplexStateMachine()])


def test_a_failing_listener_does_not_stop_the_machine() -> None:
    m, seen = machine()

    def broken(_: Transition) -> None:
        raise RuntimeError("boom")

    m.subscribe(broken)
    m.handle(E.TURN_COMMITTED)
    m.handle(E.AUDIO_STARTED)
    assert m.state is S.SPEAKING and len(seen) == 2


# --------------------------------------------------------------------------- controller


@dataclass
class FakeSpeech:
    id: str
    interrupted: bool = False
    _callbacks: list[Any] = field(default_factory=list)

    def add_done_callback(self, cb: Any) -> None:
        self._callbacks.append(cb)

    def finish(self) -> None:
        for cb in self._callbacks:
            cb(self)


class FakeSession(rtc.EventEmitter[str]):
    def __init__(self) -> None:
        super().__init__()
        self.current_speech: FakeSpeech | None = None
        self.interrupts = 0

    def interrupt(self, *, force: bool = False) -> asyncio.Future[None]:
        self.interrupts += 1
        if self.current_speech is not None:
            self.current_speech.interrupted = True
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut

    def speech(self, sid: str) -> FakeSpeech:
        from livekit.agents.voice.events import SpeechCreatedEvent

        sp = FakeSpeech(sid)
        self.current_speech = sp
        ev = SpeechCreatedEvent.model_construct(user_initiated=False, source="generate_reply",
                                                speech_handle=sp)
        self.emit("speech_created", ev)
        return sp

    def agent(self, old: str, new: str) -> None:
        self.emit("agent_state_changed", AgentStateChangedEvent(old_state=old, new_state=new))

    def user(self, old: str, new: str) -> None:
        self.emit("user_state_changed", UserStateChangedEvent(old_state=old, new_state=new))


@dataclass
class FakeSink:
    paused: bool = False
    interrupted: int = 0
    unmuted: int = 0

    def interrupt_now(self) -> None:
        self.interrupted += 1

    def unmute(self) -> None:
        self.unmuted += 1


def controller() -> tuple[DuplexController, FakeSession, FakeSink, StreamtalkTTS, list[AgentEvent],
                          list[str]]:
    # a packet a second and an LLM that takes a minute per token: replies that run until stopped
    tts = StreamtalkTTS(FakeEngine(packet_interval_s=1.0))
    llm = OmniLLM(FakeOmniClient(token_delay_s=60.0))
    session, sink, bus = FakeSession(), FakeSink(), EventBus()
    events: list[AgentEvent] = []
    bus.subscribe(events.append)
    published: list[str] = []

    async def publish(value: str) -> None:
        published.append(value)

    c = DuplexController(session, sink=sink, tts=tts, llm=llm, bus=bus,  # type: ignore[arg-type]
                         publish_state=publish)
    c.attach()
    return c, session, sink, tts, events, published


def names(events: list[AgentEvent]) -> list[str]:
    return [e.name for e in events]


async def until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_controller_follows_a_normal_turn_and_publishes_each_state() -> None:
    c, session, _, _, events, published = controller()
    session.agent("listening", "thinking")
    sp = session.speech("s1")
    c.bus.emit(FirstAudioPublished())
    session.agent("thinking", "speaking")
    c.bus.emit(PlaybackFinished(interrupted=False, position_s=1.0))
    sp.finish()
    assert c.state is S.LISTENING
    await asyncio.sleep(0.05)
    assert published[-1] == "LISTENING" and published[0] == "LISTENING"
    assert "reply_end" in names(events) and "interrupted" not in names(events)
    assert [e.payload.transition.target for e in events if e.name == "duplex"] == [
        S.THINKING, S.SPEAKING, S.LISTENING]


async def test_stop_runs_the_cascade_once_and_reports_it() -> None:
    c, session, sink, tts, events, _ = controller()
    session.agent("listening", "thinking")
    sp = session.speech("s1")
    c.bus.emit(FirstAudioPublished())
    session.agent("thinking", "speaking")
    replies = [tts.synthesize("A reply that goes on for a good while.") for _ in range(2)]
    c.llm.chat(chat_ctx=lk_llm.ChatContext.empty())
    await until(lambda: tts.active_handles == 2 and c.llm.active_streams == 1)
    result = await c.stop("stop_reply from user")
    assert result["stopped"] is True and result["tts_streams"] == 2 and result["llm_streams"] == 1
    assert sink.interrupted == 1 and session.interrupts == 1 and tts.engine.cancelled_streams == 2
    assert c.state is S.LISTENING
    interrupted = [e for e in events if e.name == "interrupted"]
    assert len(interrupted) == 1 and interrupted[0].payload.speech_id == "s1"
    cascade = [e for e in events if e.name == "cancel_cascade"]
    assert cascade and cascade[0].payload.total_ms >= cascade[0].payload.audio_stop_ms >= 0
    sp.interrupted = True
    sp.finish()  # the framework's speech ends interrupted: no second report
    assert len([e for e in events if e.name == "interrupted"]) == 1
    assert (await c.stop("again"))["stopped"] is False  # nothing left to stop
    for reply in replies:
        await reply.aclose()


async def test_barge_in_confirmed_by_the_framework_finishes_the_cascade() -> None:
    c, session, sink, tts, events, _ = controller()
    session.agent("listening", "thinking")
    sp = session.speech("s1")
    c.bus.emit(FirstAudioPublished())
    session.agent("thinking", "speaking")
    session.user("listening", "speaking")
    assert c.state is S.INTERRUPTING
    sink.paused = True
    c.bus.emit(AudioPaused(held_back_s=0.2))
    assert tts.held  # no new segment while the barge-in is decided
    assert "barge_in_paused" in names(events)
    session.user("speaking", "listening")
    assert c.state is S.PAUSED  # waiting for the words
    c.bus.emit(AudioCleared(dropped_s=3.0, clear_ms=0.5))
    await asyncio.sleep(0.05)
    assert c.state is S.LISTENING and not tts.held
    assert sink.interrupted == 0  # the framework already silenced the audio
    assert names(events).count("interrupted") == 1
    moves = [(e.payload.transition.source, e.payload.transition.target) for e in events
             if e.name == "duplex"]
    assert moves[-2:] == [("INTERRUPTING", "PAUSED"), ("PAUSED", "LISTENING")], moves
    sp.interrupted = True
    sp.finish()


async def test_the_stop_button_on_a_paused_reply_runs_the_cascade() -> None:
    c, session, sink, tts, events, published = controller()
    session.agent("listening", "thinking")
    session.speech("s1")
    c.bus.emit(FirstAudioPublished())
    session.agent("thinking", "speaking")
    sink.paused = True
    c.bus.emit(AudioPaused(held_back_s=0.2))  # the pause may come before the VAD's start
    assert c.state is S.PAUSED
    await asyncio.sleep(0.01)
    assert published[-1] == "PAUSED"  # the room sees the pause, not an interruption
    result = await c.stop("stop_reply from user")
    assert result["stopped"] is True and c.state is S.LISTENING
    assert names(events).count("interrupted") == 1
    moves = [(e.payload.transition.source, e.payload.transition.target) for e in events
             if e.name == "duplex"]
    assert moves[-1] == ("PAUSED", "LISTENING"), moves
    await asyncio.sleep(0.01)
    assert published[-1] == "LISTENING"


async def test_short_user_noise_resumes_without_a_cascade() -> None:
    c, session, sink, tts, events, _ = controller()
    session.agent("listening", "thinking")
    session.speech("s1")
    session.agent("thinking", "speaking")
    session.user("listening", "speaking")
    assert c.state is S.INTERRUPTING
    session.user("speaking", "listening")  # the playback was never paused
    assert c.state is S.SPEAKING
    assert "false_interruption" in names(events) and "interrupted" not in names(events)


async def test_paused_false_interruption_resumes_speaking() -> None:
    c, session, sink, tts, events, _ = controller()
    session.agent("listening", "thinking")
    session.speech("s1")
    session.agent("thinking", "speaking")
    session.user("listening", "speaking")
    sink.paused = True
    c.bus.emit(AudioPaused(held_back_s=0.2))
    session.user("speaking", "listening")
    assert c.state is S.PAUSED
    sink.paused = False
    session.emit("agent_false_interruption", AgentFalseInterruptionEvent(resumed=True))
    assert c.state is S.SPEAKING
    c.bus.emit(AudioResumed(queued_s=2.0))
    assert not tts.held and c.state is S.SPEAKING
    assert "interrupted" not in names(events)


async def test_resume_signals_during_a_cascade_are_ignored() -> None:
    c, session, sink, tts, _, _ = controller()
    session.agent("listening", "thinking")
    sp = session.speech("s1")
    session.agent("thinking", "speaking")
    session.user("listening", "speaking")
    c.bus.emit(AudioCleared(dropped_s=1.0, clear_ms=0.5))  # cascade begins (spawned)
    c.bus.emit(AudioResumed(queued_s=0.0))  # the next speech's reconcile: not a resume
    assert c.state is S.INTERRUPTING
    await asyncio.sleep(0.05)
    assert c.state is S.LISTENING
    sp.interrupted = True
    sp.finish()
    assert c.state is S.LISTENING


async def test_an_older_speech_ending_late_does_not_touch_the_new_reply() -> None:
    c, session, _, _, _, _ = controller()
    old = session.speech("s1")
    session.agent("listening", "thinking")
    session.speech("s2")
    old.interrupted = True
    old.finish()
    assert c.state is S.THINKING


async def test_a_detached_controller_no_longer_follows_the_bus() -> None:
    c, session, sink, tts, _, _ = controller()
    session.agent("listening", "thinking")
    session.speech("s1")
    session.agent("thinking", "speaking")
    c.detach()
    c.bus.emit(AudioPaused(held_back_s=0.2))  # attached, this would pause the reply
    assert c.state is S.SPEAKING and not tts.held
