"""AutoRTC protocol, agent side (the bots and the suite: tools/autortc/, docs/AUTORTC.md).

Data packets are UTF-8 JSON, reliable, on topic `autortc.probe` (probe -> agent)
and `autortc.agent` (agent -> bots):
`{"type", "trace_id", "case_id", "reply_seq", "t_wall_ms"}`.

- `probe_ready` from the probe (it hears the agent's track): once the agent's
  own track is published the agent answers `agent_ready` (the two-way ACK
  barrier before the user bot speaks). Data packets are not kept for late
  joiners, so `agent_ready` is repeated every READY_REPEAT_S until the first
  reply starts (at most `ready_timeout_s`): a user bot that joins after the
  probe still sees it.
- Every reply is marked `reply_start` (its first audio frame went to the room)
  and `reply_end` (its playback finished or was interrupted) with the same
  `reply_seq`, counting from 1 per room.

trace_id and case_id come from the dispatch metadata; when it has none, those
of the probe's `probe_ready` are used.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any

from livekit import rtc

from .events import AgentEvent, EventBus, FirstAudioPublished, PlaybackFinished

log = logging.getLogger("streamtalk.autortc")

TOPIC_PROBE = "autortc.probe"
TOPIC_AGENT = "autortc.agent"
READY_REPEAT_S = 1.0


class AutoRTCResponder:
    def __init__(self, room: rtc.Room, bus: EventBus, *, trace_id: str, case_id: str,
                 published: asyncio.Event, trace_id_fixed: bool = True,
                 ready_timeout_s: float = 20.0) -> None:
        self.room = room
        self.trace_id = trace_id
        self._trace_id_fixed = trace_id_fixed
        self.case_id = case_id
        self._published = published
        self._ready_timeout_s = ready_timeout_s
        self.reply_seq = 0
        self._open_reply: int | None = None
        self._ready_announced = False
        self.sent: list[dict[str, Any]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        room.on("data_received", self._on_data)
        bus.on(FirstAudioPublished, self._on_reply_start)
        bus.on(PlaybackFinished, self._on_reply_end)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.room.off("data_received", self._on_data)
        for t in list(self._tasks):
            t.cancel()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_data(self, packet: rtc.DataPacket) -> None:
        if packet.topic != TOPIC_PROBE:
            return
        try:
            msg = json.loads(packet.data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            log.warning("ignoring a malformed %s packet: %s", TOPIC_PROBE, exc)
            return
        if not isinstance(msg, dict) or msg.get("type") != "probe_ready":
            return
        if not self._trace_id_fixed and isinstance(msg.get("trace_id"), str) and msg["trace_id"]:
            self.trace_id = msg["trace_id"]
        if not self.case_id and isinstance(msg.get("case_id"), str):
            self.case_id = msg["case_id"]
        sender = packet.participant.identity if packet.participant else "?"
        log.info("probe_ready from %s (trace %s, case %s)", sender, msg.get("trace_id"),
                 msg.get("case_id"))
        self._spawn(self._answer_ready(msg))

    async def _answer_ready(self, msg: dict[str, Any]) -> None:
        try:
            await asyncio.wait_for(self._published.wait(), self._ready_timeout_s)
        except TimeoutError:
            log.error("probe_ready: the agent track is still not published after %.0f s",
                      self._ready_timeout_s)
            return
        if self._ready_announced:  # the probe resends probe_ready until it hears us
            await self._send_ready(msg)
            return
        self._ready_announced = True
        deadline = time.monotonic() + self._ready_timeout_s
        while self.reply_seq == 0 and time.monotonic() < deadline:
            await self._send_ready(msg)
            await asyncio.sleep(READY_REPEAT_S)

    async def _send_ready(self, msg: dict[str, Any]) -> None:
        await self._send("agent_ready", reply_seq=self.reply_seq,
                         trace_id=msg.get("trace_id") or self.trace_id,
                         case_id=msg.get("case_id") or self.case_id)

    def _on_reply_start(self, ev: AgentEvent[FirstAudioPublished]) -> None:
        self.reply_seq += 1
        self._open_reply = self.reply_seq
        self._spawn(self._send("reply_start", reply_seq=self.reply_seq, t_wall_ms=ev.t_wall_ms))

    def _on_reply_end(self, ev: AgentEvent[PlaybackFinished]) -> None:
        if self._open_reply is None:
            return
        seq, self._open_reply = self._open_reply, None
        self._spawn(self._send("reply_end", reply_seq=seq, t_wall_ms=ev.t_wall_ms,
                               interrupted=ev.payload.interrupted))

    async def _send(self, kind: str, *, reply_seq: int, t_wall_ms: float | None = None,
                    trace_id: str | None = None, case_id: str | None = None,
                    **extra: Any) -> None:
        msg = {
            "type": kind,
            "trace_id": trace_id or self.trace_id,
            "case_id": case_id if case_id is not None else self.case_id,
            "reply_seq": reply_seq,
            "t_wall_ms": round(t_wall_ms if t_wall_ms is not None else time.time() * 1000, 3),
            **extra,
        }
        self.sent.append(msg)
        try:
            await self.room.local_participant.publish_data(
                json.dumps(msg).encode("utf-8"), reliable=True, topic=TOPIC_AGENT
            )
        except Exception as exc:  # a disconnecting room: the log says what was lost
            log.warning("cannot send %s: %s", kind, exc)
