"""StreamtalkTTS: a streaming LiveKit `tts.TTS` over the embedded deep-streaming engine.

The engine (`tts_engine.TTSEngine`) is loaded once per worker process and
shared by every room; each room gets its own small StreamtalkTTS with its
voice and language. `stream()` takes the LLM's tokens as they come, cuts them
into segments with the text bridge (starter first, then punctuation / length),
cleans each segment for speech and synthesizes the segments one after another
while the LLM keeps streaming; the PCM packets (24 kHz mono float32) go to the
framework's audio emitter as 16-bit PCM in frames of AGENT_FRAME_MS.

Each segment asks the GPU scheduler for a lane first: the reply's first
segment (whose first packet the listener is waiting for) takes the fast lane;
a later segment whose reply already has `slow_lane_slack_s` of audio queued
takes the slow lane and gives way to other rooms' first packets. The lane
ticket is released at the segment's first packet.

Cancellation (barge-in): when the framework closes the stream, or the duplex
cascade calls `cancel_active()`, every running engine handle is cancelled; the
engine stops before its next frame. The time the engine took to stop is
measured and announced (`tts_cancelled`).

Refusals: a segment the engine refuses for want of room (`OverCapacity` after
TTS_QUEUE_TIMEOUT_S, `EngineOutOfMemory`) ends the reply's speech: its audio so far stays,
the rest is not tried (the next reply tries again), and `backend_busy` tells the room why
(the page shows a notice; the reply's text is still shown). A segment refused for itself
(text too long, a reply that outgrew its row) is skipped with `tts_error` and the reply goes
on. A reply without any audio still ends with 20 ms of silence, so the framework sees its
text answered and neither retries nor fails it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from dataclasses import dataclass

from livekit.agents import tts
from livekit.agents._exceptions import APIConnectionError
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, APIConnectOptions

from streamtalk_common.audio import SAMPLE_RATE, pcm16_bytes
from tts_engine import (
    EngineClosed,
    EngineOutOfMemory,
    OverCapacity,
    StreamHandle,
    TTSEngine,
    TTSError,
)

from .bridge import BridgeOptions, Segment, TextBridge
from .events import (
    BackendBusy,
    BackendOk,
    EventBus,
    FirstSegment,
    GpuLanes,
    LaneWait,
    TtsCancelled,
    TtsError,
    TtsFirstPacket,
    TtsHeld,
    TtsSegment,
)
from .gpu_scheduler import GpuScheduler, Lane
from .text_clean import clean_for_speech

log = logging.getLogger("streamtalk.tts")

NUM_CHANNELS = 1


@dataclass
class TTSOptions:
    speaker: str = "serena"
    language: str = "auto"
    frame_ms: int = 20
    slow_lane_slack_s: float = 1.0
    packet_tokens: int | None = None


class StreamtalkTTS(tts.TTS):
    def __init__(
        self,
        engine: TTSEngine,
        *,
        speaker: str = "serena",
        language: str = "auto",
        frame_ms: int = 20,
        scheduler: GpuScheduler | None = None,
        bus: EventBus | None = None,
        bridge_options: BridgeOptions | None = None,
        slow_lane_slack_s: float = 1.0,
        packet_tokens: int | None = None,
    ) -> None:
        super().__init__(
            capabilities=tts.TTSCapabilities(streaming=True),
            sample_rate=SAMPLE_RATE,
            num_channels=NUM_CHANNELS,
        )
        self.engine = engine
        self.opts = TTSOptions(speaker, language, frame_ms, slow_lane_slack_s, packet_tokens)
        self.scheduler = scheduler or GpuScheduler()
        self.bus = bus or EventBus()
        self.bridge_options = bridge_options or BridgeOptions()
        self._handles: dict[StreamHandle, float] = {}  # live engine handles -> cancel time or 0
        self._replies: set[_ReplyAudio] = set()
        self._running = asyncio.Event()  # cleared while the reply's playback is paused
        self._running.set()
        self._busy = False  # the engine had no room for the last reply that asked

    @property
    def model(self) -> str:
        return "qwen3-tts-deep-stream"

    @property
    def provider(self) -> str:
        return "streamtalk"

    def update_options(self, *, speaker: str | None = None, language: str | None = None) -> None:
        """Change the voice; raises ValueError (listing the valid names) on an unknown one."""
        if speaker is not None:
            if speaker.lower() not in self.engine.speakers:
                raise ValueError(f"unknown speaker {speaker!r}; "
                                 f"valid: {', '.join(self.engine.speakers)}")
            self.opts.speaker = speaker.lower()
        if language is not None:
            if language.lower() not in self.engine.languages:
                raise ValueError(f"unknown language {language!r}; "
                                 f"valid: {', '.join(self.engine.languages)}")
            self.opts.language = language.lower()

    def synthesize(
        self, text: str, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS
    ) -> StreamtalkChunkedStream:
        return StreamtalkChunkedStream(tts=self, input_text=text, conn_options=conn_options)

    def stream(
        self, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS
    ) -> StreamtalkSynthesizeStream:
        return StreamtalkSynthesizeStream(tts=self, conn_options=conn_options)

    def busy(self, segment: int, error: TTSError) -> None:
        """The engine has no room for this room's reply: show the room why (`backend_busy`,
        the `streamtalk.backend` attribute). Logged as a warning once, until a reply gets
        room again."""
        if self._busy:
            log.info("the TTS engine still has no room (segment %d): %s", segment, error)
        else:
            log.warning("the TTS engine has no room for this reply from segment %d on; the rest "
                        "is shown, not spoken: %s", segment, error)
        self._busy = True
        self.bus.emit(BackendBusy(component="tts", segment=segment, code=error.code,
                                  detail=str(error)))

    def not_busy(self) -> None:
        if self._busy:
            self._busy = False
            log.info("the TTS engine has room again")
            self.bus.emit(BackendOk(component="tts"))

    def hold(self) -> None:
        """Start no new segment (the reply is paused while a barge-in is decided): a paused
        reply has all the playback slack it needs, and the CPU/GPU goes to recognising the
        user instead. A segment already in the engine finishes."""
        self._running.clear()

    def release(self) -> None:
        self._running.set()

    @property
    def held(self) -> bool:
        return not self._running.is_set()

    @property
    def active_handles(self) -> int:
        return len(self._handles)

    def cancel_active(self) -> int:
        """Cancel every engine stream of this TTS (this room); returns how many were running."""
        now = time.perf_counter()
        n = 0
        for reply in list(self._replies):
            reply.cancelled = True  # no further segment of these replies starts
        for handle in list(self._handles):
            if not self._handles[handle]:
                self._handles[handle] = now
                handle.cancel()
                n += 1
        return n

    # -- used by both stream kinds ---------------------------------------------

    def _init_emitter(self, output_emitter: tts.AudioEmitter, stream: bool) -> None:
        """Every reply's emitter: 24 kHz mono PCM in AGENT_FRAME_MS frames (initialised
        even if silent)."""
        output_emitter.initialize(
            request_id=uuid.uuid4().hex[:12],
            sample_rate=SAMPLE_RATE,
            num_channels=NUM_CHANNELS,
            mime_type="audio/pcm",
            frame_size_ms=self.opts.frame_ms,
            stream=stream,
        )

    def _segment_audio(self, emitter: tts.AudioEmitter, streaming: bool) -> _ReplyAudio:
        reply = _ReplyAudio(self, emitter, streaming)
        self._replies.add(reply)
        return reply


class _ReplyAudio:
    """Synthesizes one reply's segments, in order, into the emitter."""

    def __init__(self, owner: StreamtalkTTS, emitter: tts.AudioEmitter, streaming: bool) -> None:
        self.owner = owner
        self.emitter = emitter
        self.streaming = streaming
        self.segment_id = uuid.uuid4().hex[:12]
        self.started = False
        self.segments = 0
        self.pushed_s = 0.0
        self.t_first_push: float | None = None
        self.first_packet_seen = False
        self.cancelled = False
        self.refused = False  # the engine had no room: the reply's remaining segments are not tried

    def slack_s(self) -> float:
        if self.t_first_push is None:
            return 0.0
        return self.pushed_s - (time.monotonic() - self.t_first_push)

    def _begin(self) -> None:
        if not self.started:
            self.started = True
            if self.streaming:
                self.emitter.start_segment(segment_id=self.segment_id)

    def refuse(self, segment: int, error: TTSError) -> None:
        """The engine refused `segment`: for want of room the reply stops here (not retried:
        the next reply tries again); refused for itself, the segment is skipped."""
        if isinstance(error, (OverCapacity, EngineOutOfMemory)):
            self.refused = True
            self.owner.busy(segment, error)
        else:
            log.warning("segment %d refused by the TTS engine (%s): %s", segment, error.code, error)
            self.owner.bus.emit(TtsError(segment=segment, code=error.code,
                                         detail=str(error)))

    async def speak(self, seg: Segment, mark_started: object) -> None:
        owner = self.owner
        text = clean_for_speech(seg.raw)
        if not text or self.cancelled or self.refused:
            return
        opts = owner.opts
        try:
            request = owner.engine.make_request(text, speaker=opts.speaker, language=opts.language)
        except TTSError as exc:  # bad text / voice
            self.refuse(seg.index, exc)
            return
        first = self.segments == 0
        if not first and owner.held:
            t_hold = time.monotonic()
            await owner._running.wait()
            owner.bus.emit(TtsHeld(segment=seg.index,
                                   held_ms=round((time.monotonic() - t_hold) * 1000, 3)))
            if self.cancelled:
                return
        slack = self.slack_s()
        if first or slack < opts.slow_lane_slack_s:
            lane, patience = Lane.FAST, None
        else:
            lane, patience = Lane.SLOW, max(0.0, slack - opts.slow_lane_slack_s / 2)
        ticket = await owner.scheduler.acquire(lane, max_wait_s=patience, label=f"seg{seg.index}")
        if self.cancelled:
            ticket.release()
            return
        owner.bus.emit(LaneWait(lane=ticket.lane.value, requested=lane.value,
                                wait_ms=round(ticket.wait_ms, 3), segment=seg.index,
                                slack_s=round(slack, 3)))
        self._begin()
        self.segments += 1
        if callable(mark_started):
            mark_started()
        try:
            handle = owner.engine.open_stream(request, packet_tokens=opts.packet_tokens)
        except EngineClosed as exc:  # the worker is shutting down
            ticket.release()
            raise APIConnectionError(f"TTS engine unavailable: {exc}", retryable=False) from exc
        except TTSError as exc:
            ticket.release()
            self.refuse(seg.index, exc)
            return
        owner._handles[handle] = 0.0
        cancelled_at: float | None = None
        try:
            await handle.admitted()
            owner.not_busy()
            async for packet in handle:
                if not ticket.released:
                    ticket.release()
                if not self.first_packet_seen:
                    self.first_packet_seen = True
                    owner.bus.emit(TtsFirstPacket(ttfa_ms=handle.metrics.ttfa_ms,
                                                  queue_wait_ms=handle.metrics.queue_wait_ms))
                self.emitter.push(pcm16_bytes(packet.pcm))
                if self.t_first_push is None:
                    self.t_first_push = time.monotonic()
                self.pushed_s += len(packet.pcm) / SAMPLE_RATE
        except TTSError as exc:  # refused at admission, or ended midway (its audio so far stays)
            self.refuse(seg.index, exc)
        except asyncio.CancelledError:
            cancelled_at = owner._handles.get(handle) or time.perf_counter()
            raise
        finally:
            ticket.release()
            if owner._handles.get(handle):
                cancelled_at = owner._handles[handle]
            owner._handles.pop(handle, None)
            if not handle.session.finished:
                handle.cancel()
                cancelled_at = cancelled_at or time.perf_counter()
            m = handle.metrics
            owner.bus.emit(TtsSegment(segment=seg.index, chars=len(text), ttfa_ms=m.ttfa_ms,
                                      audio_s=round(m.audio_s, 3), packets=m.packets))
            if cancelled_at is not None:
                _report_cancel(owner.bus, handle, cancelled_at)

    def finish(self) -> None:
        """Close the emitter's segment; a reply without audio (nothing speakable, refused,
        cancelled) sends 20 ms of silence so the framework sees the text answered."""
        self.owner._replies.discard(self)
        if not self.pushed_s:
            self._begin()
            self.emitter.push(b"\x00\x00" * (SAMPLE_RATE // 50))
        if self.streaming:
            self.emitter.end_segment()
        else:
            self.emitter.flush()


def _report_cancel(bus: EventBus, handle: StreamHandle, cancelled_at: float) -> None:
    """Announce how long the engine took to stop after cancel (it stops before its next frame)."""

    def check() -> None:
        s = handle.session
        if not s.finished:
            loop.call_later(0.05, check)
            return
        stopped_at = s.accepted_at + s.metrics.wall_ms / 1000.0
        bus.emit(TtsCancelled(
            engine_stop_ms=round(max(0.0, stopped_at - cancelled_at) * 1000, 3),
            stop_reason=s.metrics.stop_reason, audio_s=round(s.metrics.audio_s, 3)))

    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return
    loop.call_soon(check)


class StreamtalkSynthesizeStream(tts.SynthesizeStream):
    def __init__(self, *, tts: StreamtalkTTS, conn_options: APIConnectOptions) -> None:
        super().__init__(tts=tts, conn_options=conn_options)
        self._owner = tts

    async def _run(self, output_emitter: tts.AudioEmitter) -> None:
        owner = self._owner
        owner._init_emitter(output_emitter, stream=True)
        bridge = TextBridge(owner.bridge_options)
        segments: asyncio.Queue[Segment | None] = asyncio.Queue()

        def put(segs: list[Segment]) -> None:
            for s in segs:
                if s.index == 0:
                    owner.bus.emit(FirstSegment(chars=len(s.text), reason=s.reason))
                segments.put_nowait(s)

        async def read_input() -> None:
            try:
                async for item in self._input_ch:
                    if isinstance(item, self._FlushSentinel):
                        put(bridge.flush())
                    else:
                        put(bridge.push(item))
                put(bridge.flush())
            finally:
                segments.put_nowait(None)

        reader = asyncio.create_task(read_input(), name="streamtalk_tts_input")
        audio = owner._segment_audio(output_emitter, streaming=True)
        try:
            while (seg := await segments.get()) is not None and not audio.cancelled:
                await audio.speak(seg, self._mark_started)
            if not audio.cancelled:
                await reader
        finally:
            owner._replies.discard(audio)
            owner.bus.emit(GpuLanes(**owner.scheduler.stats()))
            if not reader.done():
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader
        audio.finish()


class StreamtalkChunkedStream(tts.ChunkedStream):
    def __init__(self, *, tts: StreamtalkTTS, input_text: str,
                 conn_options: APIConnectOptions) -> None:
        super().__init__(tts=tts, input_text=input_text, conn_options=conn_options)
        self._owner = tts

    async def _run(self, output_emitter: tts.AudioEmitter) -> None:
        owner = self._owner
        owner._init_emitter(output_emitter, stream=False)
        bridge = TextBridge(owner.bridge_options)
        audio = owner._segment_audio(output_emitter, streaming=False)
        segs = bridge.push(self._input_text) + bridge.flush()
        if segs:
            owner.bus.emit(FirstSegment(chars=len(segs[0].text), reason=segs[0].reason))
        try:
            for seg in segs:
                await audio.speak(seg, None)
        finally:
            owner._replies.discard(audio)
        audio.finish()
