"""When a draining worker's room is between turns (agent/drain.py): the room's own event
bus and duplex state machine drive it, on a clock the test moves."""

from __future__ import annotations

import pytest

from agent.drain import TurnActivity
from agent.duplex import DuplexEvent, DuplexStateMachine
from agent.events import (
    BackendOk,
    Duplex,
    EventBus,
    Payload,
    SttEnd,
    SttStart,
    TtsFirstPacket,
    VadEnd,
    VadStart,
)

SETTLE_S = 0.75  # exact in binary: the clock sums are exact


class Room:
    """An event bus with a duplex machine that announces its transitions on it, as the
    duplex controller does, and a clock that only moves when told."""

    def __init__(self) -> None:
        self.now = 100.0
        self.bus = EventBus(mono_clock=lambda: self.now)
        self.machine = DuplexStateMachine(mono_clock=lambda: self.now)
        self.machine.subscribe(lambda tr: self.bus.emit(Duplex(transition=tr)))
        self.turns = TurnActivity(SETTLE_S, clock=lambda: self.now)
        self.bus.subscribe(self.turns)

    def wait(self, seconds: float) -> None:
        self.now += seconds


def test_a_room_where_nothing_happened_is_idle_at_once() -> None:
    assert Room().turns.idle()


def test_a_whole_turn_keeps_the_room_busy_until_the_reply_has_ended() -> None:
    room = Room()
    steps = [
        (lambda: room.bus.emit(VadStart(speech_s=0.2, inference_ms=1.0)), "the user is speaking"),
        # within the settle time
        (lambda: room.bus.emit(VadEnd(speech_s=1.0, silence_s=0.4)), "between turns"),
        (lambda: room.bus.emit(SttStart(audio_s=1.0)), "the user's speech is being recognized"),
        (lambda: room.bus.emit(SttEnd(ok=True)), "between turns"),
        (lambda: room.machine.handle(DuplexEvent.TURN_COMMITTED), "the agent is thinking"),
        (lambda: room.machine.handle(DuplexEvent.AUDIO_STARTED), "the agent is speaking"),
    ]
    for step, described in steps:
        step()
        room.wait(SETTLE_S * 2)  # long past the settle time: only the state keeps it busy
        assert room.turns.describe() == described
        if described == "between turns":
            assert room.turns.idle()
            continue
        assert not room.turns.idle(), described
    room.machine.handle(DuplexEvent.REPLY_DONE)
    assert not room.turns.idle()  # a follow-up may come
    assert room.turns.describe() == "the last turn has just ended"
    room.wait(SETTLE_S)
    assert room.turns.idle() and room.turns.describe() == "between turns"


@pytest.mark.parametrize("event", [VadEnd(speech_s=1.0, silence_s=0.4), SttEnd(ok=True)])
def test_the_end_of_the_users_speech_leaves_time_for_the_turn_to_be_committed(
        event: Payload) -> None:
    room = Room()
    room.bus.emit(event)
    room.wait(SETTLE_S / 2)
    assert not room.turns.idle()
    room.wait(SETTLE_S / 2)
    assert room.turns.idle()


def test_an_interrupted_reply_is_busy_until_the_cascade_ends() -> None:
    room = Room()
    for ev in (DuplexEvent.TURN_COMMITTED, DuplexEvent.AUDIO_STARTED, DuplexEvent.USER_SPEECH):
        room.machine.handle(ev)
    room.wait(SETTLE_S * 2)
    assert room.turns.describe() == "the agent is interrupting" and not room.turns.idle()
    room.machine.handle(DuplexEvent.INTERRUPTED)
    room.wait(SETTLE_S)
    assert room.turns.idle()


def test_events_that_say_nothing_about_a_turn_do_not_delay_leaving() -> None:
    room = Room()
    room.wait(SETTLE_S)
    room.bus.emit(BackendOk(component="tts"))
    room.bus.emit(TtsFirstPacket(ttfa_ms=90.0, queue_wait_ms=0.0))
    assert room.turns.idle()
