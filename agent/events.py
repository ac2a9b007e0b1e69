"""The per-room event bus: components announce what happened, observers watch.

Every event the agent emits is declared once, in `Event` below, with its role:

- a **user point** or **reply point** is a timing point of the turn trace (agent/trace.py
  writes each once per turn; the two roles say which turn it belongs to); the members are
  declared in the order a turn passes them, `interrupted` last;
- a **metric** event's data goes into the reply's line of `<room>.metrics.jsonl`;
- a **signal** is for the observers alone (state changes, backend status).

What an event carries is its payload: one frozen dataclass per event, declared below the
enum and tied to its member by `event` (`AudioCleared.event is Event.AUDIO_CLEARED`). Plugins
and the room wiring emit the payload (`bus.emit(AudioCleared(dropped_s=..., clear_ms=...))`),
so a wrong or missing field fails at the emit site; the bus adds both clocks, taken at the
moment of emission. Observers either see every event (`bus.subscribe(observer)`: the trace
collector, the drain watch) or one payload type (`bus.on(AudioCleared, handler)`: the duplex
controller, the AutoRTC responder) and read attributes. No timing code lives in the business
logic beyond that one call. The trace vocabulary (`TRACE_POINTS` and the rest) is derived
from the roles, so a new point is one new member and its payload; the trace writes a
payload's `as_dict()`. docs/AGENT.md lists every event with its fields (a test checks it).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from enum import Enum, StrEnum
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

if TYPE_CHECKING:
    from .duplex import Transition

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


# -- payloads: what each event carries ------------------------------------------------------

_OMIT_NONE = "omitted while None"


def omitted_while_none() -> Any:
    """A field the trace writes only when it has a value (optional data: no key, not null)."""
    return field(default=None, metadata={_OMIT_NONE: True})


@dataclass(frozen=True)
class Payload:
    """Base of the payloads: one frozen dataclass per event, tied to it by `event`."""

    event: ClassVar[Event]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        event = cls.__dict__.get("event")
        if event is None:
            return  # a base of several payloads (`ReplyPayload`), not an event's own
        if not isinstance(event, Event):
            raise TypeError(f"{cls.__name__}.event must be an Event member, not {event!r}")
        if event in PAYLOADS:
            raise TypeError(f"{event} has two payloads: {PAYLOADS[event].__name__} and "
                            f"{cls.__name__}")
        PAYLOADS[event] = cls

    def as_dict(self) -> dict[str, Any]:
        """The data as the trace's metrics line writes it (`dataclasses.asdict`)."""
        data = asdict(self)
        for f in fields(self):
            if f.metadata.get(_OMIT_NONE) and data[f.name] is None:
                del data[f.name]
        return data


PAYLOADS: dict[Event, type[Payload]] = {}


@dataclass(frozen=True)
class ReplyPayload(Payload):
    """An event of one reply, named by its speech id (the trace files it under its turn)."""

    speech_id: str | None


@dataclass(frozen=True)
class VadEnd(Payload):
    event = Event.VAD_END
    speech_s: float
    silence_s: float


@dataclass(frozen=True)
class SttStart(Payload):
    event = Event.STT_START
    audio_s: float


@dataclass(frozen=True)
class SttEnd(Payload):
    event = Event.STT_END
    ok: bool


@dataclass(frozen=True)
class LlmRequest(Payload):
    event = Event.LLM_REQUEST
    max_tokens: int


@dataclass(frozen=True)
class LlmFirstToken(Payload):
    event = Event.LLM_FIRST_TOKEN


@dataclass(frozen=True)
class FirstSegment(Payload):
    event = Event.FIRST_SEGMENT
    chars: int
    reason: str


@dataclass(frozen=True)
class TtsFirstPacket(Payload):
    event = Event.TTS_FIRST_PACKET
    ttfa_ms: float | None
    queue_wait_ms: float | None


@dataclass(frozen=True)
class FirstAudioPublished(Payload):
    event = Event.FIRST_AUDIO_PUBLISHED


@dataclass(frozen=True)
class ReplyEnd(ReplyPayload):
    event = Event.REPLY_END
    audio: bool
    interrupted: bool
    position_s: float | None = omitted_while_none()  # only a reply that played has one


@dataclass(frozen=True)
class Interrupted(ReplyPayload):
    event = Event.INTERRUPTED
    reason: str


@dataclass(frozen=True)
class VadStart(Payload):
    event = Event.VAD_START
    speech_s: float
    inference_ms: float


@dataclass(frozen=True)
class SttResult(Payload):
    event = Event.STT_RESULT
    text: str
    ms: float
    audio_s: float


@dataclass(frozen=True)
class LaneWait(Payload):
    event = Event.LANE_WAIT
    lane: str
    requested: str
    wait_ms: float
    segment: int
    slack_s: float


LaneSnapshot = dict[str, float | int | None]


@dataclass(frozen=True)
class GpuLanes(Payload):
    """The GPU scheduler's statistics, one dict per lane (agent/gpu_scheduler.py)."""

    event = Event.GPU_LANES
    fast: LaneSnapshot
    slow: LaneSnapshot


@dataclass(frozen=True)
class TtsHeld(Payload):
    event = Event.TTS_HELD
    segment: int
    held_ms: float


@dataclass(frozen=True)
class TtsSegment(Payload):
    event = Event.TTS_SEGMENT
    segment: int
    chars: int
    ttfa_ms: float | None
    audio_s: float
    packets: int


@dataclass(frozen=True)
class TtsError(Payload):
    event = Event.TTS_ERROR
    segment: int
    code: str
    detail: str


@dataclass(frozen=True)
class TtsCancelled(Payload):
    event = Event.TTS_CANCELLED
    engine_stop_ms: float
    stop_reason: str
    audio_s: float


@dataclass(frozen=True)
class LlmDone(Payload):
    event = Event.LLM_DONE
    finish: str
    requests: int
    chars: int
    ttft_ms: float | None
    ms: float


@dataclass(frozen=True)
class LlmCancelled(Payload):
    event = Event.LLM_CANCELLED
    chars: int


@dataclass(frozen=True)
class AudioPaused(Payload):
    event = Event.AUDIO_PAUSED
    held_back_s: float


@dataclass(frozen=True)
class AudioResumed(Payload):
    event = Event.AUDIO_RESUMED
    queued_s: float


@dataclass(frozen=True)
class AudioCleared(Payload):
    event = Event.AUDIO_CLEARED
    dropped_s: float
    clear_ms: float


@dataclass(frozen=True)
class BargeIn(Payload):
    event = Event.BARGE_IN
    during: str


@dataclass(frozen=True)
class BargeInPaused(Payload):
    event = Event.BARGE_IN_PAUSED
    detect_to_pause_ms: float


@dataclass(frozen=True)
class FalseInterruption(Payload):
    event = Event.FALSE_INTERRUPTION
    paused: bool


@dataclass(frozen=True)
class CancelCascade(ReplyPayload):
    """The cascade's timings, each from its start (agent/duplex_controller.py)."""

    event = Event.CANCEL_CASCADE
    reason: str
    audio_stop_ms: float
    tts_streams: int
    tts_cancel_ms: float
    llm_streams: int
    llm_cancel_ms: float
    total_ms: float
    detect_to_cascade_ms: float | None = omitted_while_none()  # only after a barge-in


@dataclass(frozen=True)
class BackendDown(Payload):
    event = Event.BACKEND_DOWN
    component: str
    detail: str


@dataclass(frozen=True)
class BackendBusy(Payload):
    event = Event.BACKEND_BUSY
    component: str
    segment: int
    code: str
    detail: str


@dataclass(frozen=True)
class BackendOk(Payload):
    event = Event.BACKEND_OK
    component: str


@dataclass(frozen=True)
class ReplyBegin(ReplyPayload):
    event = Event.REPLY_BEGIN
    source: str
    user_initiated: bool


@dataclass(frozen=True)
class LlmContinuation(Payload):
    event = Event.LLM_CONTINUATION
    max_tokens: int


@dataclass(frozen=True)
class Backchannel(Payload):
    event = Event.BACKCHANNEL
    text: str


@dataclass(frozen=True)
class PlaybackFinished(Payload):
    event = Event.PLAYBACK_FINISHED
    interrupted: bool
    position_s: float


@dataclass(frozen=True)
class Duplex(Payload):
    event = Event.DUPLEX
    transition: Transition


_undeclared = [e.value for e in Event if e not in PAYLOADS]
if _undeclared:
    raise TypeError(f"events without a payload class: {_undeclared}")


# -- the bus --------------------------------------------------------------------------------

P = TypeVar("P", bound=Payload)


@dataclass(frozen=True)
class AgentEvent(Generic[P]):
    payload: P
    t_wall_ms: float
    t_mono_ms: float

    @property
    def name(self) -> Event:
        return self.payload.event


Observer = Callable[[AgentEvent[Any]], None]


class EventBus:
    """Synchronous fan-out within one room's event loop; observer errors are logged, not raised.

    `subscribe(observer)` sees every event; `on(ReplyEnd, handler)` only that payload type.
    Observers are called in the order they subscribed."""

    def __init__(self, *, wall_clock: Callable[[], float] = time.time,
                 mono_clock: Callable[[], float] = time.monotonic) -> None:
        self._observers: list[tuple[type[Payload] | None, Observer]] = []
        self._wall = wall_clock
        self._mono = mono_clock

    def subscribe(self, observer: Observer) -> None:
        self._observers.append((None, observer))

    def on(self, kind: type[P], handler: Callable[[AgentEvent[P]], None]) -> None:
        if kind not in PAYLOADS.values():
            raise TypeError(f"{kind!r} is no event's payload (agent/events.py declares them)")
        self._observers.append((kind, handler))

    def unsubscribe(self, observer: Callable[[AgentEvent[Any]], None]) -> None:
        """Removes the observer, or the handler from every payload type it was given."""
        self._observers = [(k, o) for k, o in self._observers if o != observer]

    def emit(self, payload: P) -> AgentEvent[P]:
        if type(payload) not in PAYLOADS.values():
            raise TypeError(f"events are emitted as their payload (VadEnd(...), ...), not "
                            f"{payload!r} (agent/events.py declares them)")
        ev = AgentEvent(payload, self._wall() * 1000.0, self._mono() * 1000.0)
        for kind, observer in list(self._observers):
            if kind is None or kind is type(payload):
                try:
                    observer(ev)
                except Exception:
                    log.exception("observer failed on event %s", ev.name)
        return ev
