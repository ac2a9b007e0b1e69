"""Turn traces: an observer of the room's event bus that writes the timing points.

One JSON object per line in `${STREAMTALK_OUTPUT}/traces/<room>.jsonl`:
`{"trace_id", "room", "turn", "point", "t_wall_ms", "t_mono_ms"}`. A turn is
one user utterance and the reply to it; each point is written once per turn
(the first time it happens). `vad_end`, `stt_start` and `stt_end` belong to
the user's turn; the reply points (`llm_request` ... `reply_end`,
`interrupted`) belong to the turn whose reply they are, which is the turn that
was current when the reply began, even if the user has started the next turn
by talking over it. A reply without a user turn (a greeting) is turn 0.

Next to the trace, `<room>.metrics.jsonl` gets one line per finished reply with
what the points do not show: lane waits, TTS first-packet time, cancel
latencies of an interruption.

Other observers of the points (the latency publisher) subscribe with
`subscribe_points`: they get each point once, with its turn, as it is written.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from .events import METRIC_EVENTS, REPLY_POINTS, USER_POINTS, AgentEvent, Event, ReplyPayload

log = logging.getLogger("streamtalk.trace")


# (turn, point, t_mono_ms)
PointListener = Callable[[int, str, float], None]


def safe_name(name: str) -> str:
    keep = "".join(c if c.isalnum() or c in "-_." else "_" for c in name).strip(".")
    return keep[:120] or "room"


class TraceCollector:
    """Observer: `bus.subscribe(collector)`; `close()` at the end of the room."""

    def __init__(self, directory: Path, room: str, trace_id: str) -> None:
        self.room = room
        self.trace_id = trace_id
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"{safe_name(room)}.jsonl"
        self.metrics_path = directory / f"{safe_name(room)}.metrics.jsonl"
        self._file: IO[str] | None = self.path.open("a", encoding="utf-8")
        self._metrics_file: IO[str] | None = self.metrics_path.open("a", encoding="utf-8")
        self._lock = threading.Lock()
        self.user_turn = 0
        self.reply_turn: int | None = None
        self._seen: set[tuple[int, str]] = set()
        self._reply_metrics: dict[int, dict[str, Any]] = {}
        self._pending: dict[int, tuple[AgentEvent[Any], asyncio.TimerHandle]] = {}
        self._speech_turn: dict[str, int] = {}
        self.metrics_delay_s = 1.0
        self.points_written = 0
        self._point_listeners: list[PointListener] = []

    def subscribe_points(self, listener: PointListener) -> None:
        self._point_listeners.append(listener)

    # -- observer --------------------------------------------------------------

    def __call__(self, ev: AgentEvent[Any]) -> None:
        name = ev.name
        if name is Event.REPLY_BEGIN:
            self.reply_turn = self.user_turn
            if ev.payload.speech_id:
                self._speech_turn[ev.payload.speech_id] = self.user_turn
            return
        if name is Event.VAD_END:
            self.user_turn += 1
            self._write(self.user_turn, name, ev)
            return
        if name in USER_POINTS:
            self._write(self.user_turn, name, ev)
            return
        if name in REPLY_POINTS:
            turn = self._turn_of(ev)
            self._write(turn, name, ev)
            if name is Event.REPLY_END:
                self._schedule_metrics(turn, ev)
            return
        if name in METRIC_EVENTS:
            # the recognition's result belongs to the user's turn, the rest to the reply's
            turn = self.user_turn if name is Event.STT_RESULT else self._turn_of(ev)
            m = self._reply_metrics.setdefault(turn, {})
            m.setdefault(name, []).append({"t_mono_ms": round(ev.t_mono_ms, 3),
                                           **ev.payload.as_dict()})

    def _turn_of(self, ev: AgentEvent[Any]) -> int:
        """A reply event's turn: by the speech it names, else the reply in progress."""
        sid = ev.payload.speech_id if isinstance(ev.payload, ReplyPayload) else None
        if sid and sid in self._speech_turn:
            return self._speech_turn[sid]
        return self.reply_turn if self.reply_turn is not None else self.user_turn

    # -- output ----------------------------------------------------------------

    def _write(self, turn: int, point: str, ev: AgentEvent[Any]) -> None:
        key = (turn, point)
        if key in self._seen:
            return
        self._seen.add(key)
        line = {
            "trace_id": self.trace_id,
            "room": self.room,
            "turn": turn,
            "point": point,
            "t_wall_ms": round(ev.t_wall_ms, 3),
            "t_mono_ms": round(ev.t_mono_ms, 3),
        }
        self._append(self._file, line)
        self.points_written += 1
        for listener in list(self._point_listeners):
            try:
                listener(turn, point, ev.t_mono_ms)
            except Exception:  # a broken listener must not stop the trace
                log.exception("trace point listener failed on %s", point)

    def _schedule_metrics(self, turn: int, ev: AgentEvent[Any]) -> None:
        """Write the reply's metrics a moment after it ended: the cancel cascade of an
        interrupted reply reports just after its audio stopped."""
        if turn in self._pending:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._flush_metrics(turn, ev)
            return
        self._pending[turn] = (ev, loop.call_later(self.metrics_delay_s, self._flush_metrics,
                                                   turn, ev))

    def _flush_pending(self) -> None:
        for turn, (ev, handle) in list(self._pending.items()):
            handle.cancel()
            self._flush_metrics(turn, ev)

    def _flush_metrics(self, turn: int, end: AgentEvent[Any] | None) -> None:
        """The reply's metrics line; `end` is its reply_end (None: the reply never ended)."""
        self._pending.pop(turn, None)
        m = self._reply_metrics.pop(turn, {})
        ended = ({"t_wall_ms": round(end.t_wall_ms, 3), **end.payload.as_dict()} if end
                 else {"t_wall_ms": 0.0})
        line = {"trace_id": self.trace_id, "room": self.room, "turn": turn, **ended, **m}
        self._append(self._metrics_file, line)

    def _append(self, f: IO[str] | None, obj: dict[str, Any]) -> None:
        if f is None:
            return
        try:
            with self._lock:
                f.write(json.dumps(obj, ensure_ascii=False, default=str) + "\n")
                f.flush()
        except OSError as exc:
            log.warning("cannot write trace %s: %s", getattr(f, "name", "?"), exc)

    def seen(self, turn: int, point: str) -> bool:
        return (turn, point) in self._seen

    def close(self) -> None:
        self._flush_pending()
        for turn in list(self._reply_metrics):  # metrics of replies that never ended
            self._flush_metrics(turn, None)
        with self._lock:
            for f in (self._file, self._metrics_file):
                if f is not None:
                    try:
                        f.close()
                    except OSError:
                        pass
            self._file = self._metrics_file = None
