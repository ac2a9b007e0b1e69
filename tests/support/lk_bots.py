"""Python participants for integration tests, built on the real `livekit.rtc` SDK.

- `play_pcm`: publish 16-bit mono PCM into a room in real time.
- `AudioLevelMonitor`: read a remote audio track and note when sound arrives.
- `ResponderBot`: a stand-in agent. It listens to the user's microphone with an
  energy VAD, answers each turn with a WAV after a fixed delay, publishes the
  attributes `lk.agent.state` / `streamtalk.duplex`, a transcript on
  `lk.transcription`, and answers the `stop_reply` RPC.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from dataclasses import dataclass, field

import numpy as np
from livekit import rtc

FRAME_MS = 10


async def play_pcm(
    source: rtc.AudioSource, pcm: np.ndarray, sample_rate: int, stop: asyncio.Event | None = None
) -> bool:
    """Push PCM in 10 ms frames (capture_frame paces in real time); False if stopped."""
    n = sample_rate * FRAME_MS // 1000
    for start in range(0, len(pcm), n):
        if stop is not None and stop.is_set():
            source.clear_queue()
            return False
        chunk = pcm[start : start + n]
        if len(chunk) < n:
            chunk = np.pad(chunk, (0, n - len(chunk)))
        await source.capture_frame(rtc.AudioFrame(chunk.tobytes(), sample_rate, 1, n))
    return True


def rms_int16(frame: rtc.AudioFrame) -> float:
    x = np.frombuffer(frame.data, dtype=np.int16).astype(np.float32)
    return float(np.sqrt(np.mean(x * x))) if x.size else 0.0


@dataclass
class AudioLevelMonitor:
    """Tracks loudness of one remote audio track; `first_sound` is a monotonic time."""

    threshold: float = 300.0  # int16 RMS
    frames: int = 0
    loud_frames: int = 0
    first_sound: float | None = None
    sound_event: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self, track: rtc.Track) -> None:
        stream = rtc.AudioStream(track, sample_rate=48000, num_channels=1)
        try:
            async for ev in stream:
                self.frames += 1
                if rms_int16(ev.frame) > self.threshold:
                    self.loud_frames += 1
                    if self.first_sound is None:
                        self.first_sound = time.monotonic()
                        self.sound_event.set()
        finally:
            await stream.aclose()


@dataclass
class BotStats:
    user_turns: int = 0
    replies_started: int = 0
    replies_finished: int = 0
    replies_stopped: int = 0
    rpc_calls: list[str] = field(default_factory=list)
    heard_frames: int = 0
    events: list[tuple[float, str]] = field(default_factory=list)  # (monotonic s, what)


class ResponderBot:
    """A minimal agent: VAD on the user's audio, a canned reply per turn."""

    def __init__(
        self,
        url: str,
        token: str,
        reply_pcm: np.ndarray,
        reply_rate: int,
        *,
        reply_text: str = "hello from the test agent",
        reply_delay_s: float = 0.3,
        vad_threshold: float = 400.0,
        hangover_s: float = 0.4,
    ) -> None:
        self.url = url
        self.token = token
        self.reply_pcm = reply_pcm
        self.reply_rate = reply_rate
        self.reply_text = reply_text
        self.reply_delay_s = reply_delay_s
        self.vad_threshold = vad_threshold
        self.hangover_s = hangover_s
        self.room = rtc.Room()
        self.source = rtc.AudioSource(reply_rate, 1, queue_size_ms=200)
        self.stats = BotStats()
        self._tasks: set[asyncio.Task[None]] = set()
        self._replying: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    async def start(self, timeout_s: float = 20.0) -> None:
        self.room.on("track_subscribed", self._on_track)
        await asyncio.wait_for(self.room.connect(self.url, self.token), timeout_s)
        self.room.local_participant.register_rpc_method("stop_reply", self._on_stop_rpc)
        await self._set_state("listening", "LISTENING")
        track = rtc.LocalAudioTrack.create_audio_track("agent-voice", self.source)
        await self.room.local_participant.publish_track(
            track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
        )

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.room.disconnect(), 10)
        with contextlib.suppress(Exception):
            await self.source.aclose()

    def _spawn(self, coro: object) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _set_state(self, agent_state: str, duplex: str) -> None:
        await self.room.local_participant.set_attributes(
            {"lk.agent.state": agent_state, "streamtalk.duplex": duplex}
        )

    def _on_track(self, track: rtc.Track, _pub: object, participant: rtc.RemoteParticipant) -> None:
        if track.kind == rtc.TrackKind.KIND_AUDIO:
            self._spawn(self._listen(track))

    async def _on_stop_rpc(self, data: rtc.RpcInvocationData) -> str:
        self.stats.rpc_calls.append(data.payload)
        self._stop.set()
        return "stopped"

    async def _listen(self, track: rtc.Track) -> None:
        """Energy VAD: a turn is >= 150 ms of sound followed by `hangover_s` of quiet."""
        stream = rtc.AudioStream(track, sample_rate=48000, num_channels=1)
        speaking, voiced_s, quiet_s = False, 0.0, 0.0
        try:
            async for ev in stream:
                self.stats.heard_frames += 1
                dur = ev.frame.samples_per_channel / ev.frame.sample_rate
                if rms_int16(ev.frame) > self.vad_threshold:
                    speaking, quiet_s = True, 0.0
                    voiced_s += dur
                elif speaking:
                    quiet_s += dur
                    if quiet_s >= self.hangover_s:
                        if voiced_s >= 0.15:
                            self.stats.user_turns += 1
                            self.stats.events.append((time.monotonic(), "user_turn_end"))
                            if self._replying is None or self._replying.done():
                                self._replying = self._spawn(self._reply())
                        speaking, voiced_s, quiet_s = False, 0.0, 0.0
        finally:
            await stream.aclose()

    async def _reply(self) -> None:
        """Audio first: state and transcript updates run beside it, as an agent's would."""
        self._stop.clear()
        self._spawn(self._set_state("thinking", "THINKING"))
        await asyncio.sleep(self.reply_delay_s)
        self.stats.replies_started += 1
        self.stats.events.append((time.monotonic(), "reply_start"))
        self._spawn(self._set_state("speaking", "SPEAKING"))
        self._spawn(self._send_transcript())
        finished = await play_pcm(self.source, self.reply_pcm, self.reply_rate, self._stop)
        if finished:
            self.stats.replies_finished += 1
        else:
            self.stats.replies_stopped += 1
        await self._set_state("listening", "LISTENING")

    async def _send_transcript(self) -> None:
        writer = await self.room.local_participant.stream_text(
            topic="lk.transcription",
            attributes={"lk.segment_id": uuid.uuid4().hex[:12], "lk.transcription_final": "true"},
        )
        for word in self.reply_text.split():
            await writer.write(word + " ")
        await writer.aclose()
