"""RoomAudioSink: the agent's voice in the room, as a LiveKit `io.AudioOutput`.

The framework captures the TTS frames into this sink; the sink re-frames them
to AGENT_FRAME_MS (20 ms) and feeds an `rtc.AudioSource` published as the
agent's microphone track, keeping at most AGENT_AUDIO_QUEUE_MS queued inside
the source (the rest waits here, where it can be dropped at once).

- `pause()` (barge-in being decided): stops feeding, pulls the not yet played
  audio back out of the source, and keeps it; `resume()` (false interruption)
  plays on from where it stopped, nothing lost.
- `clear_buffer()` (barge-in cascade): drops everything queued here and in the
  source; the playback reports `interrupted` with the position that was heard.
- Observers: `first_audio_published` and `audio_cleared` on the event bus,
  `add_frame_tap(fn)` for every frame that goes to the room (pre_rtc.wav).
- `mute_output=True` (debug, AGENT_DEBUG_MUTE_TTS): the room gets silence of the
  same length while taps still see the real frames: a deliberately broken agent.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from livekit import rtc
from livekit.agents.utils.audio import AudioByteStream
from livekit.agents.voice import io

from streamtalk_common.audio import SAMPLE_RATE

from .events import (
    AudioCleared,
    AudioPaused,
    AudioResumed,
    EventBus,
    FirstAudioPublished,
    PlaybackFinished,
)

log = logging.getLogger("streamtalk.audio")

FrameTap = Callable[[rtc.AudioFrame], None]


@dataclass
class _Item:
    frame: rtc.AudioFrame
    seq: int
    tapped: bool = False


def _silent_copy(frame: rtc.AudioFrame) -> rtc.AudioFrame:
    n = frame.samples_per_channel
    return rtc.AudioFrame(b"\x00\x00" * n * frame.num_channels, frame.sample_rate,
                          frame.num_channels, n)


class RoomAudioSink(io.AudioOutput):
    def __init__(
        self,
        room: rtc.Room,
        *,
        sample_rate: int = SAMPLE_RATE,
        frame_ms: int = 20,
        queue_ms: int = 200,
        track_name: str = "streamtalk-voice",
        bus: EventBus | None = None,
        subscribe_timeout_s: float = 10.0,
        keepalive: bool = True,
        mute_output: bool = False,
    ) -> None:
        super().__init__(
            label="StreamtalkRoomAudio",
            capabilities=io.AudioOutputCapabilities(pause=True),
            sample_rate=sample_rate,
        )
        self._room = room
        self._track_name = track_name
        self._frame_samples = sample_rate * frame_ms // 1000
        self._queue_ms = queue_ms
        self.bus = bus or EventBus()
        self._subscribe_timeout_s = subscribe_timeout_s
        self.keepalive = keepalive
        self.mute_output = mute_output
        self._source = rtc.AudioSource(sample_rate, 1, queue_size_ms=queue_ms)
        self._bstream = AudioByteStream(sample_rate, 1, samples_per_channel=self._frame_samples)
        self._queue: collections.deque[_Item] = collections.deque()
        self._recent: collections.deque[_Item] = collections.deque()  # sent, maybe not yet played
        self._wake = asyncio.Event()
        self._sent_event = asyncio.Event()
        self._interrupt = asyncio.Event()
        self._taps: list[FrameTap] = []
        self._seq = 0  # last enqueued frame
        self._sent_seq = 0  # last frame handed to the source
        self._paused = False
        self._muted = False  # after interrupt_now(): drop frames until this speech ends
        self._capturing = False
        self._seg_sent_s = 0.0
        self._seg_first_sent = False
        self._playout_task: asyncio.Task[None] | None = None
        self._forward_task: asyncio.Task[None] | None = None
        self._track: rtc.LocalAudioTrack | None = None
        self._publication: rtc.LocalTrackPublication | None = None
        self.published = asyncio.Event()
        self.subscribed = asyncio.Event()
        self.frames_sent = 0

    # -- lifecycle ----------------------------------------------------------------

    async def publish(self) -> bool:
        """Publish the voice track (again, after `withdraw()`); whether it was not already."""
        if self._publication is not None:
            return False
        self._track = rtc.LocalAudioTrack.create_audio_track(self._track_name, self._source)
        self._publication = await self._room.local_participant.publish_track(
            self._track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
        )
        self.published.set()
        asyncio.create_task(self._watch_subscription(self._publication),
                            name="streamtalk_audio_subscribed")
        return True

    async def withdraw(self) -> bool:
        """Unpublish the voice track while nobody is in the room to hear it.

        A room that the server ends (deleted, or closed after its last person left) while
        a local track is still published strands that track, its native audio source and
        one capture thread for the life of the process (livekit/rust-sdks#1443); a track
        unpublished by the agent itself is released. Frames keep flowing into the source,
        so a reply under way goes on, unheard, and `publish()` brings the voice back.
        Whether a track was published."""
        publication, self._publication = self._publication, None
        if publication is None:
            return False
        self.published.clear()
        self.subscribed.clear()
        with contextlib.suppress(Exception):
            await self._room.local_participant.unpublish_track(publication.sid)
        self._release_track()
        return True

    def _release_track(self) -> None:
        # the SDK has no public close for a local track; its native handle holds the
        # native source (and its capture thread) until the object is collected
        if self._track is not None:
            self._track._ffi_handle.dispose()
            self._track = None

    def start_forwarding(self) -> None:
        """Feed the source (published or not: taps see the frames either way)."""
        if self._forward_task is None:
            self._forward_task = asyncio.create_task(self._forward(),
                                                     name="streamtalk_audio_forward")

    async def _watch_subscription(self, publication: rtc.LocalTrackPublication) -> None:
        with contextlib.suppress(Exception):
            await publication.wait_for_subscription()
            if publication is self._publication:
                self.subscribed.set()

    async def aclose(self) -> None:
        for task in (self._playout_task, self._forward_task):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        with contextlib.suppress(Exception):
            await self._source.aclose()
        self._release_track()

    def add_frame_tap(self, tap: FrameTap) -> None:
        self._taps.append(tap)

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def queued_s(self) -> float:
        """Audio not yet heard: waiting here plus inside the source."""
        return sum(i.frame.duration for i in self._queue) + self._source.queued_duration

    # -- io.AudioOutput -------------------------------------------------------------

    async def capture_frame(self, frame: rtc.AudioFrame) -> None:
        if self._muted:
            return
        if not self._capturing and not self.subscribed.is_set():
            # nobody can hear us yet: give the listener a moment to subscribe
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.subscribed.wait(), self._subscribe_timeout_s)
        await super().capture_frame(frame)
        if not self._capturing:
            self._capturing = True
            self._seg_sent_s = 0.0
            self._seg_first_sent = False
        for f in self._bstream.push(frame.data):
            self._enqueue(f)

    def _enqueue(self, f: rtc.AudioFrame) -> None:
        self._seq += 1
        self._queue.append(_Item(f, self._seq))
        self._wake.set()

    def flush(self) -> None:
        self._muted = False
        was_capturing = self._capturing
        super().flush()
        self._capturing = False
        for f in self._bstream.flush():
            self._enqueue(f)
        if not was_capturing:
            return
        target = self._seq
        self._playout_task = asyncio.create_task(self._wait_playout(target),
                                                 name="streamtalk_audio_playout")

    def clear_buffer(self) -> None:
        self._muted = False
        self._drop_all(end_segment=True)

    def interrupt_now(self) -> None:
        """The barge-in cascade's first step: silence now, and ignore the rest of this speech's
        frames until the framework ends it (flush/clear_buffer) or a new speech begins."""
        self._muted = True
        self._drop_all(end_segment=False)  # the framework ends the segment (flush/clear_buffer)

    def unmute(self) -> None:
        self._muted = False

    def _drop_all(self, *, end_segment: bool) -> None:
        t0 = time.perf_counter()
        dropped = sum(i.frame.duration for i in self._queue)
        in_source = self._source.queued_duration
        self._queue.clear()
        self._recent.clear()
        self._bstream.clear()
        self._source.clear_queue()
        self._seg_sent_s = max(0.0, self._seg_sent_s - in_source)  # queued audio was never heard
        playing = self._playout_task is not None and not self._playout_task.done()
        if self._capturing or playing:
            self._interrupt.set()
            self._wake.set()
        if dropped or in_source:
            self.bus.emit(AudioCleared(dropped_s=round(dropped + in_source, 3),
                                       clear_ms=round((time.perf_counter() - t0) * 1000, 3)))
        if self._capturing and end_segment:
            # interrupted before the framework flushed: finish this segment now
            self._capturing = False
            super().flush()
            self._playout_task = asyncio.create_task(self._wait_playout(self._seq),
                                                     name="streamtalk_audio_playout")

    def pause(self) -> None:
        super().pause()
        if self._paused:
            return
        self._paused = True
        unplayed = self._source.queued_duration
        # put the audio the source still held back at the front of our queue
        back: list[_Item] = []
        held = 0.0
        while self._recent and held < unplayed - 1e-3:
            item = self._recent.pop()
            back.append(item)
            held += item.frame.duration
        for item in back:  # popped newest first: appendleft restores the order
            self._queue.appendleft(item)
        self._seg_sent_s = max(0.0, self._seg_sent_s - held)
        self._recent.clear()
        self._source.clear_queue()
        self.bus.emit(AudioPaused(held_back_s=round(held, 3)))

    def resume(self) -> None:
        super().resume()
        if not self._paused:
            return
        self._paused = False
        self._wake.set()
        self.bus.emit(AudioResumed(queued_s=round(self.queued_s, 3)))

    # -- internals --------------------------------------------------------------------

    def _idle(self) -> bool:
        playing = self._playout_task is not None and not self._playout_task.done()
        return not self._queue and not self._capturing and not playing

    async def _forward(self) -> None:
        recent_limit = self._queue_ms / 1000.0 + 0.1
        frame_s = self._frame_samples / self._source.sample_rate
        silence = rtc.AudioFrame(b"\x00\x00" * self._frame_samples, self._source.sample_rate, 1,
                                 self._frame_samples)
        silence_queued = False
        while True:
            if not self._queue or self._paused:
                if self.keepalive and self._idle() and self._source.queued_duration < 2 * frame_s:
                    # an idle agent still sends (silent) audio, like a microphone: listeners
                    # see the track alive before the first reply (AutoRTC's probe_ready)
                    with contextlib.suppress(Exception):
                        await self._source.capture_frame(silence)
                        silence_queued = True
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), frame_s if self.keepalive else None)
                self._wake.clear()
                continue
            item = self._queue.popleft()
            if not self._seg_first_sent:
                self._seg_first_sent = True
                if silence_queued:
                    self._source.clear_queue()  # the reply does not wait behind idle silence
                    silence_queued = False
                self.on_playback_started(created_at=time.time())
                self.bus.emit(FirstAudioPublished())
            try:
                await self._source.capture_frame(_silent_copy(item.frame) if self.mute_output
                                                 else item.frame)
            except Exception as exc:  # the room went away: drop, do not die
                log.warning("audio frame not sent: %s", exc)
                continue
            if self._paused:
                # paused while this frame was on its way: take it back, it plays on resume
                self._source.clear_queue()
                self._queue.appendleft(item)
                continue
            if self._interrupt.is_set() and not self._queue:
                self._source.clear_queue()
                self._sent_event.set()
                continue
            self._sent_seq = max(self._sent_seq, item.seq)
            self._seg_sent_s += item.frame.duration
            self.frames_sent += 1
            self._sent_event.set()
            if not item.tapped:
                item.tapped = True
                for tap in self._taps:
                    try:
                        tap(item.frame)
                    except Exception:
                        log.exception("audio tap failed")
            self._recent.append(item)
            while self._recent and sum(i.frame.duration for i in self._recent) > recent_limit:
                self._recent.popleft()

    async def _wait_playout(self, target_seq: int) -> None:
        interrupted = False
        interrupt = asyncio.ensure_future(self._interrupt.wait())
        try:
            while self._sent_seq < target_seq and not self._interrupt.is_set():
                if not self._queue and not self._paused:
                    break  # the last frame is on its way into the source
                self._sent_event.clear()
                sent = asyncio.ensure_future(self._sent_event.wait())
                await asyncio.wait([interrupt, sent], return_when=asyncio.FIRST_COMPLETED)
                sent.cancel()
            if not self._interrupt.is_set():
                playout = asyncio.ensure_future(self._source.wait_for_playout())
                await asyncio.wait([interrupt, playout], return_when=asyncio.FIRST_COMPLETED)
                playout.cancel()
            interrupted = self._interrupt.is_set()
        finally:
            interrupt.cancel()
        position = max(0.0, self._seg_sent_s)
        self._interrupt.clear()
        had_audio = self._seg_first_sent
        self.on_playback_finished(playback_position=position, interrupted=interrupted)
        if had_audio:
            self.bus.emit(PlaybackFinished(interrupted=interrupted,
                                           position_s=round(position, 3)))
