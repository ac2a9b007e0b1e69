"""AutoRTC probe bot: listens to the agent like a user would and records what arrived.

Run as a subprocess by the runner (`python -m tools.autortc.probe_bot --help`). It
subscribes to the agent's audio track; on the first frame it sends `probe_ready`
(topic `autortc.probe`, resent until `agent_ready` comes). It records every frame
with its wall-clock arrival time, collects the agent's `reply_start`/`reply_end`
events matched on trace_id + case_id + reply_seq, and writes
`post_rtc_full.wav`, `post_rtc_reply.wav` (reply `--reply-seq`, sliced with those
events) and `probe_result.json` (first audio, reply window, per-frame energy, and the
worker that served the room: the agent's `streamtalk.worker` attribute).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from livekit import rtc

from streamtalk_common.room_protocol import WORKER_ATTRIBUTE

from .common import (
    FRAME_MS,
    SILENCE_RMS,
    TOPIC_PROBE,
    agent_event,
    bot_arg_parser,
    rms,
    run_bounded,
    write_json,
    write_wav,
)

RATE = 48000
FRAME_SAMPLES = RATE * FRAME_MS // 1000
SLICE_LEAD_MS = 20.0  # frames arriving this much before reply_start still belong to the reply
SLICE_TAIL_MS = 400.0  # transport + jitter buffer after the agent's reply_end


class ProbeBot:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.room = rtc.Room()
        self.frames: list[tuple[float, np.ndarray]] = []  # (arrival wall ms, samples)
        self.events: list[dict[str, Any]] = []
        self.first_frame = asyncio.Event()
        self.ready = asyncio.Event()
        self.done = asyncio.Event()
        self.agent_identity = ""
        self.agent_worker = ""
        self._tasks: set[asyncio.Task[Any]] = set()

    def _spawn(self, coro: Any) -> None:
        t = asyncio.ensure_future(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    def _on_track(self, track: rtc.Track, _pub: Any, participant: rtc.RemoteParticipant) -> None:
        if (track.kind == rtc.TrackKind.KIND_AUDIO
                and participant.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT
                and not self.agent_identity):
            self.agent_identity = participant.identity
            self.agent_worker = participant.attributes.get(WORKER_ATTRIBUTE, "")
            self._spawn(self._record(track))

    async def _record(self, track: rtc.Track) -> None:
        # fixed 10 ms frames: frame k of the reply starts at sample k * FRAME_SAMPLES of its WAV
        stream = rtc.AudioStream(track, sample_rate=RATE, num_channels=1, frame_size_ms=FRAME_MS)
        try:
            async for ev in stream:
                x = np.frombuffer(ev.frame.data, dtype=np.int16).astype(np.float32) / 32768.0
                self.frames.append((time.time() * 1000, x))
                if not self.first_frame.is_set():
                    self.first_frame.set()
        finally:
            await stream.aclose()

    def _on_data(self, packet: rtc.DataPacket) -> None:
        msg = agent_event(packet.topic, packet.data, self.args)
        if msg is None:
            return
        self.events.append(msg)
        if msg.get("type") == "agent_ready":
            self.ready.set()
        ends = sum(1 for e in self.events if e.get("type") == "reply_end")
        if ends >= self.args.expect_replies:
            self.done.set()

    async def _send_ready(self) -> None:
        msg = {"type": "probe_ready", "trace_id": self.args.trace_id,
               "case_id": self.args.case_id, "reply_seq": 0}
        while not self.ready.is_set():
            msg["t_wall_ms"] = round(time.time() * 1000, 3)
            with contextlib.suppress(Exception):
                await self.room.local_participant.publish_data(
                    json.dumps(msg).encode("utf-8"), reliable=True, topic=TOPIC_PROBE)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.ready.wait(), 3.0)

    def event(self, kind: str, seq: int) -> dict[str, Any] | None:
        return next((e for e in self.events if e.get("type") == kind
                     and e.get("reply_seq") == seq), None)

    async def run(self) -> dict[str, Any]:
        a = self.args
        res: dict[str, Any] = {"trace_id": a.trace_id, "case_id": a.case_id, "ok": False}
        self.room.on("track_subscribed", self._on_track)
        self.room.on("data_received", self._on_data)
        t0 = time.monotonic()
        await asyncio.wait_for(self.room.connect(a.url, a.token), 20)
        try:
            await asyncio.wait_for(self.first_frame.wait(), a.ready_timeout_s)
        except TimeoutError:
            res["error"] = f"no agent audio track within {a.ready_timeout_s:.0f} s"
            return res
        res["first_frame_wall_ms"] = round(self.frames[0][0], 3)
        self._spawn(self._send_ready())
        try:
            await asyncio.wait_for(self.ready.wait(), a.ready_timeout_s)
        except TimeoutError:
            res["error"] = "no agent_ready after probe_ready"
            return res
        res["ready_after_s"] = round(time.monotonic() - t0, 3)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.done.wait(), a.record_s)
        await asyncio.sleep(a.tail_s)
        res["ok"] = True
        return res

    def finish(self, res: dict[str, Any]) -> dict[str, Any]:
        a = self.args
        out = Path(a.out_dir)
        times = np.array([t for t, _ in self.frames], dtype=np.float64)
        full = (np.concatenate([x for _, x in self.frames]) if self.frames
                else np.zeros(0, np.float32))
        write_wav(out / "post_rtc_full.wav", full, RATE)
        offsets = np.cumsum([0] + [len(x) for _, x in self.frames])
        frame_rms = [rms(x) for _, x in self.frames]
        res["agent_events"] = self.events
        res["agent_worker"] = self.agent_worker
        res["full_rms"] = rms(full)
        res["full_seconds"] = round(len(full) / RATE, 3)
        res["frames"] = [[round(t, 2), round(r, 5)] for (t, _), r in zip(self.frames, frame_rms)]
        # None when a frame of another size came: sample positions cannot be told from indices
        res["frame_samples"] = (FRAME_SAMPLES
                                if all(len(x) == FRAME_SAMPLES for _, x in self.frames)
                                else None)
        start, end = self.event("reply_start", a.reply_seq), self.event("reply_end", a.reply_seq)
        res["reply_start"], res["reply_end"] = start, end
        reply = np.zeros(0, np.float32)
        if start is not None and len(times):
            t_a = start["t_wall_ms"] - SLICE_LEAD_MS
            t_b = (end["t_wall_ms"] if end else times[-1]) + SLICE_TAIL_MS
            nxt = self.event("reply_start", a.reply_seq + 1)
            if nxt is not None:
                t_b = min(t_b, nxt["t_wall_ms"])
            i0 = int(np.searchsorted(times, t_a))
            i1 = int(np.searchsorted(times, t_b, side="right"))
            reply = full[offsets[i0]:offsets[i1]]
            loud = [i for i in range(i0, i1) if frame_rms[i] >= SILENCE_RMS]
            res["reply_window_wall_ms"] = [round(t_a, 3), round(t_b, 3)]
            res["reply_frames"] = [i0, i1]
            if loud:
                res["first_audio_wall_ms"] = round(times[loud[0]], 3)
                res["last_audio_wall_ms"] = round(times[loud[-1]], 3)
        write_wav(out / "post_rtc_reply.wav", reply, RATE)
        res["reply_rms"] = rms(reply)
        res["reply_seconds"] = round(len(reply) / RATE, 3)
        return res

    async def close(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.room.disconnect(), 5)


async def amain(args: argparse.Namespace) -> int:
    bot = ProbeBot(args)
    res = bot.finish(await run_bounded(bot, args, "probe bot"))
    write_json(Path(args.out_dir) / "probe_result.json", res)
    return 0 if res.get("ok") else 1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = bot_arg_parser(__doc__.splitlines()[0])
    p.add_argument("--out-dir", required=True)
    p.add_argument("--reply-seq", type=int, default=1, help="the reply to slice")
    p.add_argument("--record-s", type=float, default=20.0,
                   help="recording pad after agent_ready (welcome+STT+LLM+TTS+transport)")
    p.add_argument("--tail-s", type=float, default=1.0)
    return p.parse_args(argv)


if __name__ == "__main__":
    sys.exit(asyncio.run(amain(parse_args())))
