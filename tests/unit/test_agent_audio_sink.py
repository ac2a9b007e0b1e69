"""The room audio sink with a real `rtc.AudioSource` in a fake room (support/fake_room.py):
20 ms frames, the playback events the framework relies on, pause/resume without loss,
instant clearing, and its voice track published, withdrawn and published again."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
from livekit import rtc
from livekit.agents.voice.io import PlaybackFinishedEvent
from support.fake_room import FakeRoom

from agent.audio_output import RoomAudioSink
from agent.events import AgentEvent, EventBus

pytestmark = pytest.mark.timeout(60)

RATE = 24000


def tone(seconds: float, n_frames: int = 1) -> list[rtc.AudioFrame]:
    """A 440 Hz tone cut into `n_frames` frames of odd sizes (as a TTS emitter might)."""
    n = int(seconds * RATE)
    x = (np.sin(np.arange(n) * 2 * np.pi * 440 / RATE) * 8000).astype(np.int16)
    cuts = np.linspace(0, n, n_frames + 1).astype(int)
    return [rtc.AudioFrame(x[a:b].tobytes(), RATE, 1, b - a)
            for a, b in zip(cuts[:-1], cuts[1:], strict=True)]


class Harness:
    def __init__(self, **kwargs: object) -> None:
        self.bus = EventBus()
        self.events: list[AgentEvent] = []
        self.bus.subscribe(self.events.append)
        self.room = FakeRoom()
        self.sink = RoomAudioSink(self.room, sample_rate=RATE, frame_ms=20, queue_ms=100,
                                  bus=self.bus, subscribe_timeout_s=0.0, **kwargs)  # type: ignore[arg-type]
        self.sent: list[tuple[float, rtc.AudioFrame]] = []
        self.sink.add_frame_tap(lambda f: self.sent.append((time.monotonic(), f)))
        self.finished: list[PlaybackFinishedEvent] = []
        self.sink.on("playback_finished", self.finished.append)
        self.started: list[object] = []
        self.sink.on("playback_started", self.started.append)
        self.sink.start_forwarding()

    async def play(self, clip: list[rtc.AudioFrame]) -> None:
        """Capture a whole reply and wait until it has been played out."""
        for f in clip:
            await self.sink.capture_frame(f)
        self.sink.flush()
        await asyncio.wait_for(self.sink.wait_for_playout(), 5)

    def sent_samples(self) -> int:
        return sum(f.samples_per_channel for _, f in self.sent)

    def names(self) -> list[str]:
        return [e.name for e in self.events]

    async def until(self, cond, timeout_s: float = 5.0) -> None:  # noqa: ANN001
        deadline = time.monotonic() + timeout_s
        while not cond():
            assert time.monotonic() < deadline, "timed out"
            await asyncio.sleep(0.01)


async def test_frames_to_the_room_are_20_ms_and_playback_is_reported() -> None:
    h = Harness()
    try:
        clip = tone(0.5, n_frames=7)
        await h.play(clip)
        sizes = [f.samples_per_channel for _, f in h.sent]
        assert set(sizes[:-1]) == {480} and sizes[-1] <= 480  # exact 20 ms frames
        assert h.sent_samples() == sum(f.samples_per_channel for f in clip)
        assert len(h.started) == 1 and len(h.finished) == 1
        assert h.finished[0].interrupted is False
        assert h.finished[0].playback_position == pytest.approx(0.5, abs=0.02)
        assert h.names().count("first_audio_published") == 1
        assert "playback_finished" in h.names()
        # real-time pacing: the last frame left about 0.5 s - queue after the first
        span = h.sent[-1][0] - h.sent[0][0]
        assert 0.25 < span < 1.5
    finally:
        await h.sink.aclose()


async def test_pause_holds_the_audio_and_resume_loses_nothing() -> None:
    h = Harness()
    try:
        clip = tone(1.0, n_frames=10)
        for f in clip:
            await h.sink.capture_frame(f)
        h.sink.flush()
        await h.until(lambda: h.sent_samples() > RATE * 0.3)
        h.sink.pause()
        paused_at = h.sent_samples()
        await asyncio.sleep(0.3)
        assert h.sent_samples() == paused_at  # nothing plays while paused
        assert h.finished == []
        held = [e for e in h.events if e.name == "audio_paused"][0].payload.held_back_s
        assert 0.0 < held <= 0.2  # what the source still held comes back, not lost
        h.sink.resume()
        await asyncio.wait_for(h.sink.wait_for_playout(), 5)
        assert h.finished[0].interrupted is False
        # every sample went out once; the held-back part was not tapped twice
        assert h.sent_samples() == sum(f.samples_per_channel for f in clip)
    finally:
        await h.sink.aclose()


async def test_audio_generated_while_paused_waits_and_resume_goes_on_where_it_stopped() -> None:
    """A false interruption: the TTS keeps producing the segment under way while the playback
    is paused; on resume the room hears the reply on from the pause, in order, nothing twice."""
    h = Harness()
    try:
        clip = tone(1.2, n_frames=12)
        for f in clip[:6]:
            await h.sink.capture_frame(f)
        await h.until(lambda: h.sent_samples() > RATE * 0.2)
        h.sink.pause()
        paused_at = h.sent_samples()
        for f in clip[6:]:  # generation goes on into the sink's buffer
            await h.sink.capture_frame(f)
        h.sink.flush()
        await asyncio.sleep(0.3)
        assert h.sent_samples() == paused_at and h.finished == []
        assert h.sink.queued_s == pytest.approx(1.2 - paused_at / RATE, abs=0.25)
        h.sink.resume()
        await asyncio.wait_for(h.sink.wait_for_playout(), 5)
        assert h.finished[0].interrupted is False
        heard = np.concatenate([np.frombuffer(f.data, dtype=np.int16) for _, f in h.sent])
        played = np.concatenate([np.frombuffer(f.data, dtype=np.int16) for f in clip])
        assert np.array_equal(heard, played)  # the reply in its order, each sample once
    finally:
        await h.sink.aclose()


async def test_clear_buffer_stops_at_once_and_reports_the_heard_position() -> None:
    h = Harness()
    try:
        for f in tone(2.0, n_frames=20):
            await h.sink.capture_frame(f)
        h.sink.flush()
        await h.until(lambda: h.sent_samples() > RATE * 0.4)
        t0 = time.perf_counter()
        h.sink.clear_buffer()
        clear_ms = (time.perf_counter() - t0) * 1000
        assert h.sink.queued_s == 0.0  # nothing left to hear
        n = h.sent_samples()
        await asyncio.wait_for(h.sink.wait_for_playout(), 5)
        await asyncio.sleep(0.2)
        assert h.sent_samples() <= n + 480  # at most the frame already on its way
        assert h.finished[0].interrupted is True
        # heard = sent minus what the 100 ms source queue still held
        assert 0.25 < h.finished[0].playback_position < 1.0
        cleared = [e for e in h.events if e.name == "audio_cleared"][0]
        assert cleared.payload.dropped_s > 1.0
        assert clear_ms < 20
    finally:
        await h.sink.aclose()


async def test_interrupt_now_drops_the_rest_of_the_speech_until_it_ends() -> None:
    h = Harness()
    try:
        clip = tone(0.6, n_frames=6)
        for f in clip[:3]:
            await h.sink.capture_frame(f)
        await h.until(lambda: h.sent_samples() > 0)
        h.sink.interrupt_now()
        for f in clip[3:]:  # the framework is still forwarding this speech
            await h.sink.capture_frame(f)
        n = h.sent_samples()
        h.sink.flush()  # ... then it ends the speech
        await asyncio.wait_for(h.sink.wait_for_playout(), 5)
        assert h.finished[0].interrupted is True
        await asyncio.sleep(0.1)
        assert h.sent_samples() <= n + 480
        # the next speech plays normally
        for f in tone(0.2):
            await h.sink.capture_frame(f)
        h.sink.flush()
        await asyncio.wait_for(h.sink.wait_for_playout(), 5)
        assert h.finished[1].interrupted is False
        assert h.names().count("first_audio_published") == 2
    finally:
        await h.sink.aclose()


async def test_an_idle_sink_sends_silence_but_taps_only_replies() -> None:
    h = Harness()
    try:
        await asyncio.sleep(0.3)
        assert h.sent == [] and h.sink.frames_sent == 0
        assert h.sink._source.queued_duration > 0  # keepalive silence is flowing
    finally:
        await h.sink.aclose()
    quiet = Harness(keepalive=False)
    try:
        await asyncio.sleep(0.2)
        assert quiet.sink._source.queued_duration == 0
    finally:
        await quiet.sink.aclose()


@pytest.mark.parametrize("muted", [False, True])
async def test_debug_mute_sends_silence_and_taps_keep_the_real_audio(muted: bool) -> None:
    h = Harness(mute_output=muted)
    to_source: list[rtc.AudioFrame] = []
    real_capture = h.sink._source.capture_frame

    async def spy(frame: rtc.AudioFrame) -> None:
        to_source.append(frame)
        await real_capture(frame)

    h.sink._source.capture_frame = spy  # type: ignore[method-assign]
    try:
        clip = tone(0.3, n_frames=3)
        await h.play(clip)
        tapped = np.concatenate([np.frombuffer(f.data, np.int16) for _, f in h.sent])
        assert len(tapped) == sum(f.samples_per_channel for f in clip)
        assert np.abs(tapped).max() > 7000  # pre_rtc.wav keeps the real reply either way
        loudest = max(int(np.abs(np.frombuffer(f.data, np.int16)).max()) for f in to_source)
        assert (loudest == 0) if muted else (loudest > 7000)
    finally:
        await h.sink.aclose()


async def test_the_voice_track_is_published_withdrawn_and_published_again() -> None:
    h = Harness()
    me = h.room.local_participant
    try:
        assert await h.sink.publish() and not await h.sink.publish()  # one track at a time
        [publication] = me.published.values()
        assert h.sink.published.is_set() and not h.sink.subscribed.is_set()
        publication.subscribe()
        await h.until(h.sink.subscribed.is_set)
        assert await h.sink.withdraw() and not await h.sink.withdraw()
        assert me.unpublished == [publication.sid] and not me.published
        assert not h.sink.published.is_set() and not h.sink.subscribed.is_set()
        assert await h.sink.publish()  # the voice comes back, on a new track
        assert list(me.published) != [publication.sid] and len(me.published) == 1
    finally:
        await h.sink.aclose()
