"""The per-room event bus: components announce what happened, observers watch.

Every event the agent emits is declared once, in `Event` below, with its role:

- a **user point** or **reply point** is a timing point of the turn trace (agent/trace.py
  writes each once per turn; the two roles say which turn it belongs to); the members are
  declared in the order a turn passes them, `interrupted` last;
- a **metric** event's data goes into the reply's line of `<room>.metrics.jsonl`;
- a **signal** is for the observers alone (state changes, backend status).

Plugins and the room wiring emit them (`bus.emit(Event.LLM_FIRST_TOKEN)`) with both clocks
taken at the moment of emission; the trace collector, the AutoRTC responder, the duplex
controller and the drain watch subscribe. No timing code lives in the business logic
beyond that one call. The trace vocabulary (`TRACE_POINTS` and the rest) is derived from
the roles, so a new point is one new member. docs/AGENT.md lists every event.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from typing import Any

log = logging.getLogger("streamtalk.events")


class Role(Enum):
    USER_POINT = "user point"
    REPLY_POINT = "reply point"
    METRIC = "metric"
    SIGNAL = "signal"


class Event(StrEnum):
    role: Role

    def __new__(cls, value: str, role: Role) -> Event:
        member = str.__new__(cls, value)
        member._value_ = value
        member.role = role
        return member

    # trace points, in the order a turn passes them
    VAD_END = "vad_end", Role.USER_POINT
    STT_START = "stt_start", Role.USER_POINT
    STT_END = "stt_end", Role.USER_POINT
    LLM_REQUEST = "llm_request", Role.REPLY_POINT
    LLM_FIRST_TOKEN = "llm_first_token", Role.REPLY_POINT
    FIRST_SEGMENT = "first_segment", Role.REPLY_POINT
    TTS_FIRST_PACKET = "tts_first_packet", Role.REPLY_POINT
    FIRST_AUDIO_PUBLISHED = "first_audio_published", Role.REPLY_POINT
    REPLY_END = "reply_end", Role.REPLY_POINT
    INTERRUPTED = "interrupted", Role.REPLY_POINT
    # metrics of the reply
    VAD_START = "vad_start", Role.METRIC
    STT_RESULT = "stt_result", Role.METRIC
    LANE_WAIT = "lane_wait", Role.METRIC
    GPU_LANES = "gpu_lanes", Role.METRIC
    TTS_HELD = "tts_held", Role.METRIC
    TTS_SEGMENT = "tts_segment", Role.METRIC
    TTS_ERROR = "tts_error", Role.METRIC
    TTS_CANCELLED = "tts_cancelled", Role.METRIC
    LLM_DONE = "llm_done", Role.METRIC
    LLM_CANCELLED = "llm_cancelled", Role.METRIC
    AUDIO_PAUSED = "audio_paused", Role.METRIC
    AUDIO_RESUMED = "audio_resumed", Role.METRIC
    AUDIO_CLEARED = "audio_cleared", Role.METRIC
    BARGE_IN = "barge_in", Role.METRIC
    BARGE_IN_PAUSED = "barge_in_paused", Role.METRIC
    FALSE_INTERRUPTION = "false_interruption", Role.METRIC
    CANCEL_CASCADE = "cancel_cascade", Role.METRIC
    BACKEND_DOWN = "backend_down", Role.METRIC
    BACKEND_BUSY = "backend_busy", Role.METRIC
    # signals
    BACKEND_OK = "backend_ok", Role.SIGNAL
    REPLY_BEGIN = "reply_begin", Role.SIGNAL
    LLM_CONTINUATION = "llm_continuation", Role.SIGNAL
    BACKCHANNEL = "backchannel", Role.SIGNAL
    PLAYBACK_FINISHED = "playback_finished", Role.SIGNAL
    DUPLEX = "duplex", Role.SIGNAL


def _with(*roles: Role) -> tuple[Event, ...]:
    return tuple(e for e in Event if e.role in roles)


USER_POINTS = _with(Role.USER_POINT)
REPLY_POINTS = _with(Role.REPLY_POINT)
# every timing point in turn order; a reply that is not interrupted passes all but the last
TRACE_POINTS = USER_POINTS + REPLY_POINTS
METRIC_EVENTS = _with(Role.METRIC)


@dataclass(frozen=True)
class AgentEvent:
    name: Event
    t_wall_ms: float
    t_mono_ms: float
    data: dict[str, Any] = field(default_factory=dict)


Observer = Callable[[AgentEvent], None]


class EventBus:
    """Synchronous fan-out within one room's event loop; observer errors are logged, not raised."""

    def __init__(self, *, wall_clock: Callable[[], float] = time.time,
                 mono_clock: Callable[[], float] = time.monotonic) -> None:
        self._observers: list[Observer] = []
        self._wall = wall_clock
        self._mono = mono_clock

    def subscribe(self, observer: Observer) -> None:
        self._observers.append(observer)

    def unsubscribe(self, observer: Observer) -> None:
        if observer in self._observers:
            self._observers.remove(observer)

    def emit(self, name: Event, **data: Any) -> AgentEvent:
        if not isinstance(name, Event):
            raise TypeError(f"events are Event members, not {name!r} (agent/events.py declares them)")
        ev = AgentEvent(name, self._wall() * 1000.0, self._mono() * 1000.0, data)
        for observer in list(self._observers):
            try:
                observer(ev)
            except Exception:
                log.exception("observer failed on event %s", name)
        return ev
