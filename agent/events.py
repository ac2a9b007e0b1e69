"""The per-room event bus: components announce what happened, observers watch.

Plugins and the room wiring emit named events (`bus.emit("llm_first_token")`)
with both clocks taken at the moment of emission; the trace collector, the
AutoRTC responder and the metrics writer subscribe. No timing code lives in
the business logic beyond that one call.

Trace points (interfaces.md, "Timing points"): vad_end, stt_start, stt_end,
llm_request, llm_first_token, first_segment, tts_first_packet,
first_audio_published, reply_end, interrupted. Other events carry metrics
(lane waits, cancel latencies) and status (backend up/down).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("streamtalk.events")

TRACE_POINTS = (
    "vad_end",
    "stt_start",
    "stt_end",
    "llm_request",
    "llm_first_token",
    "first_segment",
    "tts_first_packet",
    "first_audio_published",
    "reply_end",
)
INTERRUPTED_POINT = "interrupted"


@dataclass(frozen=True)
class AgentEvent:
    name: str
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

    def emit(self, name: str, **data: Any) -> AgentEvent:
        ev = AgentEvent(name, self._wall() * 1000.0, self._mono() * 1000.0, data)
        for observer in list(self._observers):
            try:
                observer(ev)
            except Exception:
                log.exception("observer failed on event %s", name)
        return ev
