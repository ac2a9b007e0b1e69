"""AutoRTC user bot: speaks a case WAV into the room after the two-way ready barrier.

Run as a subprocess by the runner (`python -m tools.autortc.user_bot --help`). It
joins with a token, publishes a microphone track, waits for the agent's
`agent_ready` (sent only after the probe's `probe_ready`: the barrier), then
plays the WAV in real time and keeps the microphone alive with silence. An
optional barge-in WAV is played `--barge-in-ms` after the agent's `reply_start`
of reply 1. It writes `user_result.json` with the exact end of turn (the wall
time at which the last speech sample went to WebRTC) and, per turn, the onset
(the same for the first speech sample) and the pauses inside the utterance.
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

from .common import FRAME_MS, agent_event, bot_arg_parser, read_wav, run_bounded, write_json

SPEECH_FLOOR = 0.02  # |sample| above this counts as speech for the eot


def speech_timing(x: np.ndarray, wav: Path | None = None) -> dict[str, Any]:
    """First and last speech sample and the pauses ([start, end) sample indices): from the
    case's sidecar JSON (written by make_cases from the clean speech) when there is one, else
    the first and last sample above SPEECH_FLOOR and no pauses."""
    meta = wav.with_suffix(".json") if wav is not None else None
    if meta is not None and meta.exists():
        m = json.loads(meta.read_text())
        return {"first_speech_sample": int(m["first_speech_sample"]),
                "last_speech_sample": int(m["last_speech_sample"]), "pauses": m["pauses"]}
    idx = np.flatnonzero(np.abs(x) > SPEECH_FLOOR)
    first, last = (int(idx[0]), int(idx[-1])) if idx.size else (0, len(x) - 1)
    return {"first_speech_sample": first, "last_speech_sample": last, "pauses": []}


class UserBot:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.room = rtc.Room()
        self.rate = 48000
        self.source = rtc.AudioSource(self.rate, 1, queue_size_ms=100)
        self.events: list[dict[str, Any]] = []
        self.ready = asyncio.Event()
        self.reply_started = asyncio.Event()
        self.replies_ended = 0
        self.all_done = asyncio.Event()

    def _on_data(self, packet: rtc.DataPacket) -> None:
        msg = agent_event(packet.topic, packet.data, self.args)
        if msg is None:
            return
        self.events.append(msg)
        kind = msg.get("type")
        if kind == "agent_ready":
            self.ready.set()
        elif kind == "reply_start" and msg.get("reply_seq") == 1:
            self.reply_started.set()
        elif kind == "reply_end":
            self.replies_ended += 1
            if self.replies_ended >= self.args.expect_replies:
                self.all_done.set()

    async def play(self, x: np.ndarray, wav: Path | None = None) -> dict[str, Any]:
        """Real-time playback; returns wall times (ms) of start, speech onset, eot, the pauses
        and the end."""
        n = self.rate * FRAME_MS // 1000
        pcm = np.clip(x * 32768.0, -32768, 32767).astype(np.int16)
        timing = speech_timing(x, wav=wav)
        t_start = time.time() * 1000
        for i in range(0, len(pcm), n):
            chunk = pcm[i:i + n]
            if len(chunk) < n:
                chunk = np.pad(chunk, (0, n - len(chunk)))
            await self.source.capture_frame(rtc.AudioFrame(chunk.tobytes(), self.rate, 1, n))
        await self.source.wait_for_playout()
        t_end = time.time() * 1000
        padded = -(-len(pcm) // n) * n

        def wall(sample: int) -> float:
            """When `sample` went to WebRTC: playout end minus the samples after it."""
            return round(t_end - (padded - sample) / self.rate * 1000.0, 3)

        last = timing["last_speech_sample"]
        return {"start_wall_ms": round(t_start, 3),
                "onset_wall_ms": wall(timing["first_speech_sample"]),
                "eot_wall_ms": wall(last + 1), "end_wall_ms": round(t_end, 3),
                "pauses_wall_ms": [[wall(a), wall(b)] for a, b in timing["pauses"]],
                "last_speech_sample": last}

    async def silence_until(self, stop: asyncio.Event, max_s: float) -> None:
        n = self.rate * FRAME_MS // 1000
        zeros = np.zeros(n, dtype=np.int16).tobytes()
        deadline = time.monotonic() + max_s
        while not stop.is_set() and time.monotonic() < deadline:
            await self.source.capture_frame(rtc.AudioFrame(zeros, self.rate, 1, n))

    async def run(self) -> dict[str, Any]:
        a = self.args
        result: dict[str, Any] = {"trace_id": a.trace_id, "case_id": a.case_id, "ok": False,
                                  "wav": Path(a.wav).name}
        speech, rate = read_wav(Path(a.wav))
        if rate != self.rate:
            raise SystemExit(f"{a.wav}: rate {rate}, expected {self.rate}")
        self.room.on("data_received", self._on_data)
        t0 = time.monotonic()
        await asyncio.wait_for(self.room.connect(a.url, a.token), 20)
        track = rtc.LocalAudioTrack.create_audio_track("mic", self.source)
        await self.room.local_participant.publish_track(
            track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE))
        idle = asyncio.Event()
        keepalive = asyncio.ensure_future(self.silence_until(idle, a.ready_timeout_s))
        try:
            await asyncio.wait_for(self.ready.wait(), a.ready_timeout_s)
        except TimeoutError:
            result["error"] = f"no agent_ready within {a.ready_timeout_s:.0f} s"
            return result
        finally:
            idle.set()
            await keepalive
        result["ready_wall_ms"] = round(time.time() * 1000, 3)
        result["ready_after_s"] = round(time.monotonic() - t0, 3)
        turn = await self.play(speech, Path(a.wav))
        result.update(turn)
        result["turns"] = [turn]
        stop = asyncio.Event()
        if a.barge_in_wav:
            barge, _ = read_wav(Path(a.barge_in_wav))
            keep = asyncio.ensure_future(self.silence_until(stop, a.hold_s))
            started = True
            try:
                await asyncio.wait_for(self.reply_started.wait(), a.hold_s)
                await asyncio.sleep(a.barge_in_ms / 1000)
            except TimeoutError:
                started = False
                result["error"] = "no reply_start to barge into"
            finally:
                stop.set()
                await keep
            if started:
                turn = await self.play(barge, Path(a.barge_in_wav))
                turn["after_reply_start_ms"] = a.barge_in_ms
                result["turns"].append(turn)
            stop = asyncio.Event()
        keep = asyncio.ensure_future(self.silence_until(stop, a.hold_s))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.all_done.wait(), a.hold_s)
        await asyncio.sleep(a.tail_s)
        stop.set()
        await keep
        result["ok"] = "error" not in result
        result["agent_events"] = self.events
        return result

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.room.disconnect(), 5)
        with contextlib.suppress(Exception):
            await self.source.aclose()


async def amain(args: argparse.Namespace) -> int:
    result = await run_bounded(UserBot(args), args, "user bot")
    write_json(Path(args.out), result)
    return 0 if result.get("ok") else 1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = bot_arg_parser(__doc__.splitlines()[0])
    p.add_argument("--wav", required=True)
    p.add_argument("--out", required=True, help="user_result.json path")
    p.add_argument("--barge-in-wav", default="")
    p.add_argument("--barge-in-ms", type=float, default=800.0,
                   help="delay after reply_start of reply 1 before the barge-in")
    p.add_argument("--hold-s", type=float, default=25.0, help="wait for the replies at most this")
    p.add_argument("--tail-s", type=float, default=0.5)
    return p.parse_args(argv)


if __name__ == "__main__":
    sys.exit(asyncio.run(amain(parse_args())))
