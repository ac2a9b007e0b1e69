"""The duplex state machine: LISTENING / THINKING / SPEAKING / INTERRUPTING / PAUSED (pure logic).

Every change of state is an explicit transition `(state, event) -> state` from
one table; each one is recorded (time, event, reason) and handed to the
listeners, which publish it (participant attribute `streamtalk.duplex`), trace
it and run the barge-in cascade. An event that has no transition from the
current state changes nothing and is returned as None, so a late or duplicate
event from the framework can never corrupt the state.

    LISTENING    --turn_committed-->   THINKING      (the user's turn is complete)
    THINKING     --audio_started-->    SPEAKING      (first reply audio published)
    SPEAKING     --user_speech-->      INTERRUPTING  (barge-in candidate)
    SPEAKING     --stop_requested-->   INTERRUPTING  (the stop button, RPC stop_reply)
    INTERRUPTING --interrupted-->      LISTENING     (cascade: LLM, TTS, queued audio cancelled)
    INTERRUPTING --resumed-->          SPEAKING      (speech too short to pause anything)
    SPEAKING/INTERRUPTING --paused-->  PAUSED        (playback paused while the barge-in is decided)
    PAUSED       --resumed-->          SPEAKING      (false interruption: playback resumes)
    PAUSED       --interrupted-->      LISTENING     (a real interruption: the cascade ran)
    SPEAKING     --reply_done-->       LISTENING
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

log = logging.getLogger("streamtalk.duplex")

DUPLEX_ATTRIBUTE = "streamtalk.duplex"


class DuplexState(StrEnum):
    LISTENING = "LISTENING"
    THINKING = "THINKING"
    SPEAKING = "SPEAKING"
    INTERRUPTING = "INTERRUPTING"
    PAUSED = "PAUSED"


class DuplexEvent(StrEnum):
    TURN_COMMITTED = "turn_committed"  # user turn complete, a reply is being generated
    AUDIO_STARTED = "audio_started"  # the reply's first audio frame went to the room
    REPLY_DONE = "reply_done"  # the reply finished playing (not interrupted)
    REPLY_FAILED = "reply_failed"  # the reply ended without audio (error, empty)
    USER_SPEECH = "user_speech"  # the user started talking over the agent
    STOP_REQUESTED = "stop_requested"  # explicit stop (RPC stop_reply)
    PAUSED = "paused"  # playback paused while the barge-in is decided
    RESUMED = "resumed"  # the barge-in was false: the reply goes on
    INTERRUPTED = "interrupted"  # the reply was cancelled (LLM, TTS, queued audio)
    RESET = "reset"  # the session ended or restarted


S, E = DuplexState, DuplexEvent

# (state, event) -> next state. INTERRUPTING + RESUMED goes back to where it came from
# (THINKING or SPEAKING), so it is decided in `_target`, not here.
TRANSITIONS: dict[tuple[DuplexState, DuplexEvent], DuplexState] = {
    (S.LISTENING, E.TURN_COMMITTED): S.THINKING,
    (S.LISTENING, E.AUDIO_STARTED): S.SPEAKING,  # a reply without a user turn (greeting, notice)
    (S.THINKING, E.AUDIO_STARTED): S.SPEAKING,
    (S.THINKING, E.REPLY_DONE): S.LISTENING,
    (S.THINKING, E.REPLY_FAILED): S.LISTENING,
    (S.THINKING, E.USER_SPEECH): S.INTERRUPTING,
    (S.THINKING, E.STOP_REQUESTED): S.INTERRUPTING,
    (S.THINKING, E.INTERRUPTED): S.LISTENING,
    (S.SPEAKING, E.REPLY_DONE): S.LISTENING,
    (S.SPEAKING, E.REPLY_FAILED): S.LISTENING,
    (S.SPEAKING, E.USER_SPEECH): S.INTERRUPTING,
    (S.SPEAKING, E.STOP_REQUESTED): S.INTERRUPTING,
    (S.SPEAKING, E.PAUSED): S.PAUSED,
    (S.SPEAKING, E.INTERRUPTED): S.LISTENING,
    (S.SPEAKING, E.TURN_COMMITTED): S.THINKING,
    (S.INTERRUPTING, E.PAUSED): S.PAUSED,
    (S.INTERRUPTING, E.STOP_REQUESTED): S.INTERRUPTING,
    (S.INTERRUPTING, E.INTERRUPTED): S.LISTENING,
    (S.INTERRUPTING, E.REPLY_DONE): S.LISTENING,
    (S.INTERRUPTING, E.REPLY_FAILED): S.LISTENING,
    (S.INTERRUPTING, E.TURN_COMMITTED): S.THINKING,
    (S.INTERRUPTING, E.AUDIO_STARTED): S.SPEAKING,
    # a paused reply resumes as it was (speaking) or ends in the cascade; a stop request
    # while paused is that cascade's first step and leaves the state as it is
    (S.PAUSED, E.RESUMED): S.SPEAKING,
    (S.PAUSED, E.INTERRUPTED): S.LISTENING,
    (S.PAUSED, E.REPLY_DONE): S.LISTENING,
    (S.PAUSED, E.REPLY_FAILED): S.LISTENING,
    (S.PAUSED, E.TURN_COMMITTED): S.THINKING,
}
_RESUMABLE = (S.THINKING, S.SPEAKING)


@dataclass(frozen=True)
class Transition:
    seq: int
    source: DuplexState
    target: DuplexState
    event: DuplexEvent
    reason: str
    t_wall_ms: float
    t_mono_ms: float

    def to_dict(self) -> dict[str, object]:
        return {
            "seq": self.seq,
            "from": self.source.value,
            "to": self.target.value,
            "event": self.event.value,
            "reason": self.reason,
            "t_wall_ms": round(self.t_wall_ms, 3),
            "t_mono_ms": round(self.t_mono_ms, 3),
        }


Listener = Callable[[Transition], None]


class DuplexStateMachine:
    def __init__(
        self,
        *,
        wall_clock: Callable[[], float] = time.time,
        mono_clock: Callable[[], float] = time.monotonic,
        history_limit: int = 1000,
    ) -> None:
        self._state = DuplexState.LISTENING
        self._resume_to: DuplexState | None = None
        self._listeners: list[Listener] = []
        self._wall = wall_clock
        self._mono = mono_clock
        self._seq = 0
        self._history: list[Transition] = []
        self._history_limit = history_limit

    @property
    def state(self) -> DuplexState:
        return self._state

    @property
    def history(self) -> list[Transition]:
        return list(self._history)

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def can_handle(self, event: DuplexEvent) -> bool:
        return self._target(event) is not None

    def handle(self, event: DuplexEvent, reason: str = "") -> Transition | None:
        """Apply `event`; returns the transition, or None when the event does not apply."""
        target = self._target(event)
        if target is None:
            log.debug("duplex: %s ignored in %s (%s)", event.value, self._state.value, reason)
            return None
        source = self._state
        if target is DuplexState.INTERRUPTING and source in _RESUMABLE:
            self._resume_to = source
        elif target is not DuplexState.INTERRUPTING:
            self._resume_to = None
        self._state = target
        self._seq += 1
        tr = Transition(
            seq=self._seq,
            source=source,
            target=target,
            event=event,
            reason=reason,
            t_wall_ms=self._wall() * 1000.0,
            t_mono_ms=self._mono() * 1000.0,
        )
        self._history.append(tr)
        if len(self._history) > self._history_limit:
            del self._history[: len(self._history) - self._history_limit]
        log.info("duplex %s -> %s on %s%s", source.value, target.value, event.value,
                 f" ({reason})" if reason else "")
        for listener in list(self._listeners):
            try:
                listener(tr)
            except Exception:  # a broken listener must not stop the machine
                log.exception("duplex listener failed on %s", event.value)
        return tr

    def _target(self, event: DuplexEvent) -> DuplexState | None:
        if event is DuplexEvent.RESET:
            return DuplexState.LISTENING
        if event is DuplexEvent.RESUMED and self._state is DuplexState.INTERRUPTING:
            return self._resume_to or DuplexState.LISTENING
        return TRANSITIONS.get((self._state, event))
