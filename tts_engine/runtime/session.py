"""Per-request state: the session the worker advances, and the handle its caller reads.

A `StreamSession` is touched by the engine's worker thread (its row, its
frames, its packets) and read by its consumer through a thread-safe sink. The
consumer's side is a `StreamHandle`: an async iterator over `PCMPacket`s, with
`admitted()` (wait for a row, or the over-capacity refusal), `closed()` (the
final metrics are in) and `cancel()`.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import threading
import time
import uuid
import weakref
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING

import numpy as np

from ..synthesis import SAMPLE_RATE, Request

if TYPE_CHECKING:
    from ..prompt import Prompt
    from .engine import TTSEngine

SILENCE_RMS = 1e-3  # a packet quieter than this counts as silent
PLAYOUT_BUFFER_S = 0.150  # playback starts this long after the first packet (underrun measure)


@dataclass
class PCMPacket:
    index: int
    pcm: np.ndarray  # float32 mono, 24 kHz, frames x 1920 samples
    frames: int
    t_ready_ms: float  # since the request was accepted
    codegen_ms: float  # this packet's share of its steps' code generation
    decode_ms: float
    glue_ms: float  # conversion and hand-off

    def timings(self) -> dict:
        """Every field but the PCM: a packet's line in its request's packet_log (asdict
        would deep-copy the PCM first, on the worker thread)."""
        return {name: getattr(self, name) for name in _TIMING_FIELDS}


_TIMING_FIELDS = tuple(f.name for f in fields(PCMPacket) if f.name != "pcm")


@dataclass
class RequestMetrics:
    request_id: str
    speaker: str
    language: str
    text_chars: int
    packet_tokens: int
    frames: int = 0
    packets: int = 0
    audio_s: float = 0.0
    ttfa_ms: float | None = None
    wall_ms: float = 0.0
    rtf: float | None = None
    codegen_wall_total_ms: float = 0.0
    decode_wall_total_ms: float = 0.0
    glue_wall_total_ms: float = 0.0
    queue_wait_ms: float | None = None
    underruns: int = 0  # packets ready after their playback time (150 ms playout buffer)
    batch_max: int = 0  # the most streams that shared one of its steps
    stop_reason: str = ""
    error: str | None = None
    graph_stats: dict = field(default_factory=dict)
    packet_log: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        """The metrics as they are now, for JSON. A packet's line is never changed once
        logged, so the lines are shared, not copied: asdict's deep copy of a reply's hundred
        lines took about 1 ms, on the HTTP loop's thread and with the GIL, for every request
        that ended, so a wave of ending replies held the engine's worker back."""
        return {**vars(self), "graph_stats": dict(self.graph_stats),
                "packet_log": list(self.packet_log)}


_DONE = object()


def _ignore(*_: object) -> None:
    """A consumer callback nobody listens to."""


class StreamSession:
    """One request's state; owned by the worker thread, read by its consumer."""

    _counter = itertools.count()

    def __init__(self, request: Request, packet_tokens: int, first_packet_tokens: int,
                 sink: Callable[[object], None], request_id: str | None = None) -> None:
        self.id = request_id or uuid.uuid4().hex[:16]
        self.order = next(self._counter)
        self.request = request
        self.packet_tokens = packet_tokens
        self.first_packet_tokens = min(first_packet_tokens, packet_tokens)
        self.sink = sink  # receives packets, then an exception or _DONE; thread-safe
        self.cancelled = threading.Event()
        self.finished = False
        self.accepted_at = time.perf_counter()
        self.started_at: float | None = None  # admitted to a row
        self.first_packet_at: float | None = None
        self.row: int | None = None
        self.position = 0  # the talker position of its next step
        self.frame_limit = 0
        self.text_tokens = 0  # the prompt's text tokens (known once admitted to a row)
        self.prompt: Prompt | None = None  # built while it waited, if a step left the time
        self.row_limited = False  # the frame limit comes from the row's size, not the request
        self.windowed_state: object | None = None  # decoder state in windowed mode
        self.pending: list[np.ndarray] = []  # PCM of frames not yet in a packet
        self.pending_codegen_ms = 0.0
        self.pending_decode_ms = 0.0
        self.codes: list[np.ndarray] = []  # every frame's 16 codes
        self.silent_packets = 0
        self.on_admitted: Callable[[BaseException | None], None] = _ignore
        self.on_closed: Callable[[], None] = _ignore
        self.metrics = RequestMetrics(
            request_id=self.id, speaker=request.speaker, language=request.language,
            text_chars=len(request.text), packet_tokens=packet_tokens,
        )

    @property
    def sampled(self) -> bool:
        return self.request.params.do_sample

    @property
    def next_packet_frames(self) -> int:
        """The first packet's frames, then as many as were sent before, up to packet_tokens
        (1, 1, 2, 4 ...), so each packet is made while the audio before it plays. A second
        packet of two frames after a one-frame first one had to be made within 80 ms of
        playback: on a CPU, where a frame takes 30-50 ms, one slow step ran the room dry."""
        if not self.metrics.packets:
            return self.first_packet_tokens
        return min(self.packet_tokens, self.metrics.frames)

    @property
    def next_packet_due(self) -> float:
        """When the next packet must be ready to play on time: playback starts
        PLAYOUT_BUFFER_S after the first packet (infinitely far before it)."""
        if self.first_packet_at is None:
            return math.inf
        return self.first_packet_at + PLAYOUT_BUFFER_S + self.metrics.audio_s

    def margin_s(self, now: float, step_s: float) -> float:
        """How long the worker may spend elsewhere before this stream's next packet would
        miss its playback time, given the steps that packet still needs."""
        return self.next_packet_due - now - (self.next_packet_frames - len(self.pending)) * step_s

    def emit(self, item: object) -> None:
        self.sink(item)

    def cancel(self) -> None:
        self.cancelled.set()

    def add_frame(self, codes: np.ndarray, pcm: np.ndarray, codegen_ms: float,
                  decode_ms: float) -> None:
        self.codes.append(codes)
        self.pending.append(pcm)
        self.pending_codegen_ms += codegen_ms
        self.pending_decode_ms += decode_ms

    def take_packet(self, packet_metrics: bool) -> PCMPacket:
        """The pending frames as the next packet; updates the metrics."""
        t0 = time.perf_counter()
        pcm = np.concatenate(self.pending)
        m = self.metrics
        packet = PCMPacket(index=m.packets, pcm=pcm, frames=len(self.pending),
                           t_ready_ms=(t0 - self.accepted_at) * 1000,
                           codegen_ms=self.pending_codegen_ms,
                           decode_ms=self.pending_decode_ms, glue_ms=0.0)
        self.pending, self.pending_codegen_ms, self.pending_decode_ms = [], 0.0, 0.0
        if self.first_packet_at is None:
            self.first_packet_at = t0
            m.ttfa_ms = packet.t_ready_ms
        elif t0 > self.next_packet_due:
            m.underruns += 1
        self.silent_packets = (self.silent_packets + 1
                               if float(np.sqrt(np.mean(pcm**2))) < SILENCE_RMS else 0)
        m.frames += packet.frames
        m.packets += 1
        m.audio_s += len(pcm) / SAMPLE_RATE
        packet.glue_ms = (time.perf_counter() - t0) * 1000
        m.codegen_wall_total_ms += packet.codegen_ms
        m.decode_wall_total_ms += packet.decode_ms
        m.glue_wall_total_ms += packet.glue_ms
        if packet_metrics:
            m.packet_log.append(packet.timings())
        return packet

    def let_go(self) -> None:
        """Tell the consumer the engine has let this session go: closed, then the end of
        stream (a consumer that reads to the end finds it closed). The consumer's callbacks
        are dropped then: they hold its handle, which holds the session, and without that
        cycle a finished request's objects die as soon as the consumer lets go of them,
        instead of piling up in the garbage collector's oldest generation until a full
        collection, which a loaded server pays for in one long pause."""
        self.on_closed()
        self.emit(_DONE)
        self.on_admitted = self.on_closed = _ignore

    def close_metrics(self, reason: str) -> None:
        m = self.metrics
        m.stop_reason = "cancelled" if self.cancelled.is_set() else reason
        m.wall_ms = (time.perf_counter() - self.accepted_at) * 1000
        m.rtf = (m.wall_ms / 1000 / m.audio_s) if m.audio_s else None


class StreamHandle:
    """Async iterator over one session's packets; leaving it early cancels the work."""

    def __init__(self, engine: TTSEngine, session: StreamSession, items: asyncio.Queue) -> None:
        self.engine = engine
        self.session = session
        self._items = items
        loop = asyncio.get_running_loop()
        self._admitted: asyncio.Future = loop.create_future()
        self._closed: asyncio.Future = loop.create_future()
        session.on_admitted = lambda error: call_in_loop(loop, _resolve, self._admitted, error)
        session.on_closed = lambda: call_in_loop(loop, _resolve, self._closed, None)

    @property
    def id(self) -> str:
        return self.session.id

    @property
    def metrics(self) -> RequestMetrics:
        return self.session.metrics

    async def admitted(self) -> None:
        """Wait until the stream has a row; raises OverCapacity (or another TTSError)
        when the engine refused it. Cancelling the wait cancels the stream."""
        try:
            await asyncio.shield(self._admitted)
        except asyncio.CancelledError:
            self.cancel()
            raise

    async def closed(self) -> RequestMetrics:
        """Wait until the engine has let the session go; its final metrics."""
        await asyncio.shield(self._closed)
        return self.metrics

    def cancel(self) -> None:
        self.session.cancel()
        self.engine.wake()

    async def __aenter__(self) -> StreamHandle:
        return self

    async def __aexit__(self, *exc: object) -> None:
        if not self.session.finished:
            self.cancel()

    def __aiter__(self) -> AsyncIterator[PCMPacket]:
        return self._packets()

    async def _packets(self) -> AsyncIterator[PCMPacket]:
        try:
            while True:
                item = await self._items.get()
                if item is _DONE:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            if not self.session.finished:
                self.cancel()


class LoopMailbox:
    """Calls from the worker thread to one event loop, run there in order, with one wake-up
    of the loop per batch. Waking a loop writes to its self-pipe, a system call during
    which the worker lets go of the GIL; when the loop's thread is busy (the HTTP server
    writing thousands of packets a second) it takes the GIL and the worker waits to get it
    back, once per packet with a wake-up per call: measured, turns of a loaded engine
    stalled for 50-250 ms in hand-overs and freed rows with the worker's own CPU time a
    fraction of that (docs/PERFORMANCE.md, "Slow turns"). A call that finds the mailbox
    already scheduled only joins the batch."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._calls: list[tuple[Callable, tuple]] = []
        self._lock = threading.Lock()
        self._scheduled = False

    def call(self, callback: Callable, *args: object) -> None:
        with self._lock:
            self._calls.append((callback, args))
            if self._scheduled:
                return
            self._scheduled = True
        try:
            self.loop.call_soon_threadsafe(self._run_calls)
        except RuntimeError:
            # a loop that has closed belongs to a consumer that is gone: nothing to tell it
            if not self.loop.is_closed():
                raise
            with self._lock:
                self._calls.clear()
                self._scheduled = False

    def _run_calls(self) -> None:
        with self._lock:
            calls, self._calls = self._calls, []
            self._scheduled = False
        for callback, args in calls:
            try:
                callback(*args)
            except Exception as exc:  # noqa: BLE001 - as the loop reports a failing callback
                self.loop.call_exception_handler({"message": f"callback {callback!r} failed",
                                                  "exception": exc})


_mailboxes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopMailbox] = (
    weakref.WeakKeyDictionary())
_mailboxes_lock = threading.Lock()


def call_in_loop(loop: asyncio.AbstractEventLoop, callback: Callable, *args: object) -> None:
    """Hand `callback` to a consumer's event loop from the worker thread, after every call
    handed to that loop before it (through the loop's LoopMailbox)."""
    with _mailboxes_lock:
        mailbox = _mailboxes.get(loop)
        if mailbox is None:
            mailbox = _mailboxes[loop] = LoopMailbox(loop)
    mailbox.call(callback, *args)


def _resolve(future: asyncio.Future, error: BaseException | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)
        future.exception()  # retrieved: a refusal nobody awaited is not an asyncio warning
