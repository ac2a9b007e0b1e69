"""Drives the duplex state machine from one room's live events and runs the barge-in cascade.

Inputs (observed, never polled): the session's agent/user state changes,
false-interruption events and speech handles; the audio sink's pause /
resume / clear / first frame; the `stop_reply` RPC. Each becomes a
`DuplexEvent`; the machine decides the transition. Every transition is
published as the participant attribute `streamtalk.duplex` (latest state
wins) and logged.

The cascade (`stop()`): silence the room audio first (the sink drops what is
queued, here and inside the WebRTC source), then cancel the engine streams
(`handle.cancel()`: the engine stops before its next frame), the LLM stream
(the HTTP response is closed) and the framework's speech. Each step is timed;
`cancel_cascade` on the event bus carries the numbers, `interrupted` is the
trace point. While the framework decides a barge-in its audio is paused and
the machine is PAUSED (not INTERRUPTING: nothing is given up yet). A barge-in
the framework confirms (the user's words arrive) ends in the same cascade,
PAUSED -> LISTENING; one it rejects (no words: a cough) resumes the paused
audio, PAUSED -> SPEAKING.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Awaitable
from typing import Any

from livekit.agents.voice import AgentSession
from livekit.agents.voice.events import (
    AgentFalseInterruptionEvent,
    AgentStateChangedEvent,
    SpeechCreatedEvent,
    UserStateChangedEvent,
)
from livekit.agents.voice.speech_handle import SpeechHandle

from .attribute_publisher import AttributePublisher, Send
from .audio_output import RoomAudioSink
from .duplex import DuplexEvent, DuplexState, DuplexStateMachine, Transition
from .events import (
    AgentEvent,
    AudioCleared,
    AudioPaused,
    AudioResumed,
    BargeIn,
    BargeInPaused,
    CancelCascade,
    Duplex,
    EventBus,
    FalseInterruption,
    FirstAudioPublished,
    Interrupted,
    PlaybackFinished,
    ReplyBegin,
    ReplyEnd,
)
from .llm import OmniLLM
from .tts import StreamtalkTTS

log = logging.getLogger("streamtalk.duplex")

# the states in which a barge-in is being decided: it may still resume or end in the cascade
_DECIDING = (DuplexState.INTERRUPTING, DuplexState.PAUSED)


class DuplexController:
    def __init__(
        self,
        session: AgentSession,
        *,
        sink: RoomAudioSink,
        tts: StreamtalkTTS,
        llm: OmniLLM,
        bus: EventBus,
        publish_state: Send | None = None,
        machine: DuplexStateMachine | None = None,
    ) -> None:
        self.session = session
        self.sink = sink
        self.tts = tts
        self.llm = llm
        self.bus = bus
        self.machine = machine or DuplexStateMachine()
        self._state_publisher = (AttributePublisher(publish_state, "the duplex state")
                                 if publish_state is not None else None)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._barge_in_at: float | None = None  # perf_counter of the last INTERRUPTING entry
        self._cascade_at: float | None = None
        self._speech_audio: dict[str, bool] = {}
        self._reported: set[str] = set()  # speech ids whose interruption was reported
        self._reply_id: str | None = None
        self._playing_id: str | None = None
        self.interruptions: collections.deque[dict[str, Any]] = collections.deque(maxlen=100)
        self.machine.subscribe(self._on_transition)

    @property
    def state(self) -> DuplexState:
        return self.machine.state

    # -- wiring ---------------------------------------------------------------------

    def agent_has_floor(self) -> bool:
        """Whether a reply is playing, or paused while a barge-in is decided."""
        return self.machine.state in (DuplexState.SPEAKING, *_DECIDING)

    def attach(self) -> None:
        s = self.session
        s.on("agent_state_changed", self._on_agent_state)
        s.on("user_state_changed", self._on_user_state)
        s.on("agent_false_interruption", self._on_false_interruption)
        s.on("speech_created", self._on_speech_created)
        self.bus.on(FirstAudioPublished, self._on_first_audio)
        self.bus.on(PlaybackFinished, self._on_playback_finished)
        self.bus.on(AudioPaused, self._on_audio_paused)
        self.bus.on(AudioResumed, self._on_audio_resumed)
        self.bus.on(AudioCleared, self._on_audio_cleared)
        self._schedule_publish()

    def detach(self) -> None:
        s = self.session
        for name, fn in (("agent_state_changed", self._on_agent_state),
                         ("user_state_changed", self._on_user_state),
                         ("agent_false_interruption", self._on_false_interruption),
                         ("speech_created", self._on_speech_created)):
            with contextlib.suppress(Exception):
                s.off(name, fn)
        for handler in (self._on_first_audio, self._on_playback_finished, self._on_audio_paused,
                        self._on_audio_resumed, self._on_audio_cleared):
            self.bus.unsubscribe(handler)
        for t in list(self._tasks):
            t.cancel()
        if self._state_publisher is not None:
            self._state_publisher.close()

    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- inputs -----------------------------------------------------------------------

    def _resumable(self) -> bool:
        """A paused reply may resume only while no cascade runs and it was not interrupted."""
        if self._cascade_at is not None:
            return False
        speech = self.session.current_speech
        return speech is None or not speech.interrupted

    def _on_agent_state(self, ev: AgentStateChangedEvent) -> None:
        if ev.new_state == "thinking":
            self.machine.handle(DuplexEvent.TURN_COMMITTED, "agent thinking")
        elif ev.new_state == "speaking":
            if self.machine.state in _DECIDING:
                if self._resumable():
                    self.machine.handle(DuplexEvent.RESUMED, "agent speaking again")
            else:
                self.machine.handle(DuplexEvent.AUDIO_STARTED, "playback started")

    def _on_user_state(self, ev: UserStateChangedEvent) -> None:
        state = self.machine.state
        if ev.new_state == "speaking" and state in (DuplexState.SPEAKING, DuplexState.THINKING):
            self._barge_in_at = time.perf_counter()
            self.machine.handle(DuplexEvent.USER_SPEECH, "user talks over the agent")
            self.bus.emit(BargeIn(during=state.value))
        elif ev.new_state != "speaking" and state is DuplexState.INTERRUPTING:
            if not self.sink.paused and self._resumable():
                # too short to pause anything: the reply never stopped
                self.bus.emit(FalseInterruption(paused=False))
                self.machine.handle(DuplexEvent.RESUMED, "user speech too short to interrupt")

    def _on_false_interruption(self, ev: AgentFalseInterruptionEvent) -> None:
        if ev.resumed and self.machine.state in _DECIDING and self._resumable():
            self.bus.emit(FalseInterruption(paused=True))
            self.machine.handle(DuplexEvent.RESUMED, "false interruption: playback resumed")

    def _on_speech_created(self, ev: SpeechCreatedEvent) -> None:
        handle = ev.speech_handle
        self.sink.unmute()
        self.tts.release()
        self._reply_id = handle.id
        self._speech_audio[handle.id] = False
        self.bus.emit(ReplyBegin(speech_id=handle.id, source=ev.source,
                                 user_initiated=ev.user_initiated))
        handle.add_done_callback(self._on_speech_done)

    def _on_speech_done(self, handle: SpeechHandle) -> None:
        had_audio = self._speech_audio.pop(handle.id, False)
        if handle.id != self._reply_id:
            return  # an older reply wound down after a newer one began: not the current state
        if handle.interrupted:
            self._finish_interruption("speech interrupted", handle.id)
            if not had_audio:
                self.bus.emit(ReplyEnd(speech_id=handle.id, audio=False, interrupted=True))
        elif not had_audio:
            self.bus.emit(ReplyEnd(speech_id=handle.id, audio=False, interrupted=False))
            self.machine.handle(DuplexEvent.REPLY_FAILED, "reply without audio")
        elif self.machine.state is DuplexState.SPEAKING:
            self.machine.handle(DuplexEvent.REPLY_DONE, "reply finished")

    def _on_first_audio(self, ev: AgentEvent[FirstAudioPublished]) -> None:
        speech = self.session.current_speech
        self._playing_id = speech.id if speech is not None else self._reply_id
        if self._playing_id is not None:
            self._speech_audio[self._playing_id] = True

    def _on_playback_finished(self, ev: AgentEvent[PlaybackFinished]) -> None:
        self.bus.emit(ReplyEnd(speech_id=self._playing_id, audio=True,
                               interrupted=ev.payload.interrupted,
                               position_s=ev.payload.position_s))
        self._playing_id = None

    def _on_audio_paused(self, ev: AgentEvent[AudioPaused]) -> None:
        if self.machine.state in (DuplexState.SPEAKING, DuplexState.INTERRUPTING):
            if self._barge_in_at is None:
                self._barge_in_at = time.perf_counter()
            self.machine.handle(DuplexEvent.PAUSED, "playback paused for a barge-in")
            self.tts.hold()
            detect_to_pause_s = time.perf_counter() - self._barge_in_at
            self.bus.emit(BargeInPaused(detect_to_pause_ms=round(detect_to_pause_s * 1000, 3)))

    def _on_audio_resumed(self, ev: AgentEvent[AudioResumed]) -> None:
        self.tts.release()
        if self.machine.state in _DECIDING and self._resumable():
            self.machine.handle(DuplexEvent.RESUMED, "playback resumed")

    def _on_audio_cleared(self, ev: AgentEvent[AudioCleared]) -> None:
        if self.machine.state in _DECIDING and self._cascade_at is None:
            # the framework confirmed the barge-in and is cancelling: finish the cascade
            begun = self._begin("barge-in confirmed")
            self._spawn(self._cascade(begun, already_silent=True))

    # -- the cascade --------------------------------------------------------------------

    async def stop(self, reason: str) -> dict[str, Any]:
        """Cancel the current reply in one cascade: queued audio, TTS generation, LLM stream."""
        state = self.machine.state
        if state is DuplexState.LISTENING and not self.tts.active_handles \
                and not self.llm.active_streams:
            return {"stopped": False, "state": state.value}
        if self._cascade_at is not None:
            return {"stopped": True, "state": state.value, "already": True}
        return await self._cascade(self._begin(reason), already_silent=False)

    def _begin(self, reason: str) -> tuple[float, str, str | None]:
        """The synchronous start of a cascade: the reply is given up now (trace point)."""
        t0 = time.perf_counter()
        self._cascade_at = t0
        speech_id = self._playing_id or self._reply_id
        self.machine.handle(DuplexEvent.STOP_REQUESTED, reason)
        self._report_interrupted(reason, speech_id)
        return t0, reason, speech_id

    async def _cascade(self, begun: tuple[float, str, str | None], *,
                       already_silent: bool) -> dict[str, Any]:
        t0, reason, speech_id = begun
        timings: dict[str, Any] = {"reason": reason}
        if not already_silent:
            self.sink.interrupt_now()
        timings["audio_stop_ms"] = round((time.perf_counter() - t0) * 1000, 3)
        timings["tts_streams"] = self.tts.cancel_active()
        timings["tts_cancel_ms"] = round((time.perf_counter() - t0) * 1000, 3)
        fut: asyncio.Future[None] | None = None
        with contextlib.suppress(RuntimeError):
            fut = self.session.interrupt(force=True)
        timings["llm_streams"] = await self.llm.cancel_active()
        timings["llm_cancel_ms"] = round((time.perf_counter() - t0) * 1000, 3)
        if fut is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(fut), 3.0)
        timings["total_ms"] = round((time.perf_counter() - t0) * 1000, 3)
        if self._barge_in_at is not None:
            timings["detect_to_cascade_ms"] = round((t0 - self._barge_in_at) * 1000, 3)
        self.bus.emit(CancelCascade(speech_id=speech_id, **timings))
        self.interruptions.append(timings)
        log.info("reply cancelled (%s): audio %.1f ms, tts %d stream(s) %.1f ms, "
                 "llm %d stream(s) %.1f ms, total %.1f ms", reason, timings["audio_stop_ms"],
                 timings["tts_streams"], timings["tts_cancel_ms"], timings["llm_streams"],
                 timings["llm_cancel_ms"], timings["total_ms"])
        self._finish_interruption(reason, speech_id)
        return {"stopped": True, "state": self.machine.state.value, **timings}

    def _report_interrupted(self, reason: str, speech_id: str | None) -> None:
        """The trace point, once per reply, at the moment the reply is given up."""
        key = speech_id or ""
        if key not in self._reported:
            self._reported.add(key)
            self.bus.emit(Interrupted(speech_id=speech_id, reason=reason))

    def _finish_interruption(self, reason: str, speech_id: str | None) -> None:
        self.tts.release()
        if self.machine.state in (*_DECIDING, DuplexState.SPEAKING, DuplexState.THINKING):
            if self.machine.handle(DuplexEvent.INTERRUPTED, reason) is not None:
                self._report_interrupted(reason, speech_id)
        self._cascade_at = None
        self._barge_in_at = None

    # -- outputs ------------------------------------------------------------------------

    def _on_transition(self, tr: Transition) -> None:
        self.bus.emit(Duplex(transition=tr))
        self._schedule_publish()

    def _schedule_publish(self) -> None:
        if self._state_publisher is not None:
            self._state_publisher.set(self.machine.state.value)
