"""TTSEngine: one loaded model serving many concurrent streams, packet by packet.

The model lives in one worker thread that owns every GPU call. Each request is
a `StreamSession` holding its own code-generation state, its own incremental
decoder state and an asyncio queue; the worker repeatedly asks the scheduler
which session to advance, generates one frame for it, and once a packet's
worth of frames (packet_tokens) exists decodes exactly those frames and hands
the PCM to the session's queue. A reply's first packet leaves the moment it
exists; with decode overlap (TTS_DECODE_OVERLAP, on by default on CUDA) each
later packet decodes on a second CUDA stream while the next frame is generated
and leaves as soon as that decode has finished, at most one frame later, so
the decoder's time hides behind code generation. Cancellation is seen before
the next frame, and sessions never share state, so a stream's output does not
depend on what else is running.

    engine = TTSEngine(EngineConfig.from_env())      # loads, warms up
    async with engine.open_stream("Hello", "serena") as stream:
        async for packet in stream:                   # PCMPacket
            play(packet.pcm)
    stream.metrics                                    # RequestMetrics
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import queue
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from .codec_graphs import CodecGraphRunner
from .codegen import frame_limit
from .config import EngineConfig, resolve_dtype
from .graphs import GraphedCodegen, GraphStream
from .scheduler import pick_next
from .synthesis import SAMPLE_RATE, Request, TTSModel

log = logging.getLogger("tts_engine")

SILENCE_RMS = 1e-3  # a packet quieter than this counts as silent


class EngineStartError(RuntimeError):
    """The engine refuses to start (device, memory, model directory)."""


@dataclass
class PCMPacket:
    index: int
    pcm: np.ndarray  # float32 mono, 24 kHz, packet frames x 1920 samples
    frames: int
    t_ready_ms: float  # since the request was accepted
    codegen_ms: float  # waiting on this packet's codes
    decode_ms: float
    glue_ms: float  # conversion and hand-off


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
    stop_reason: str = ""
    error: str | None = None
    graph_stats: dict = field(default_factory=dict)
    packet_log: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


_DONE = object()


@dataclass
class PacketInFlight:
    """A packet whose decode has been launched but that has not been handed over yet."""

    codes: torch.Tensor  # kept alive until the decode stream has read it
    frames: int
    codegen_ms: float
    host_pcm: torch.Tensor | None = None  # float32; written asynchronously on the decode stream
    decode_ms: float | None = None  # known at launch when decoding in line
    started: torch.cuda.Event | None = None  # decode-stream events (overlap on CUDA)
    done: torch.cuda.Event | None = None

    def decoded(self) -> bool:
        return self.done is None or self.done.query()

    def wait(self) -> float:
        """Block until decoded; the decode time in ms (GPU time on the decode stream)."""
        if self.done is not None:
            self.done.synchronize()
            self.decode_ms = self.started.elapsed_time(self.done)
        return self.decode_ms or 0.0


class StreamSession:
    """One request's state; touched by the worker thread and read by its consumer."""

    _counter = itertools.count()

    def __init__(self, request: Request, packet_tokens: int, sink: Callable[[object], None],
                 request_id: str | None = None) -> None:
        self.id = request_id or uuid.uuid4().hex[:16]
        self.order = next(self._counter)
        self.request = request
        self.packet_tokens = packet_tokens
        self.sink = sink  # receives packets, then an exception or _DONE; thread-safe
        self.cancelled = threading.Event()
        self.finished = False
        self.accepted_at = time.perf_counter()
        self.started_at: float | None = None
        self.codegen: GraphStream | None = None
        self.decoder_stream = None
        self.pending: list[torch.Tensor] = []  # frames of the packet being built, each [1, 16]
        self.in_flight: PacketInFlight | None = None  # decoded or decoding, not handed over
        self.pending_codegen_ms = 0.0
        self.silent_packets = 0
        self.all_codes: list[torch.Tensor] = []
        self.metrics = RequestMetrics(
            request_id=self.id, speaker=request.speaker, language=request.language,
            text_chars=len(request.text), packet_tokens=packet_tokens,
        )

    @property
    def first_packet_sent(self) -> bool:
        return self.metrics.packets > 0

    def playback_slack_s(self, now: float) -> float:
        """Audio already delivered minus time elapsed: how long the listener can wait."""
        return self.metrics.audio_s - (now - (self.started_at or now))

    def emit(self, item: object) -> None:
        self.sink(item)

    def cancel(self) -> None:
        self.cancelled.set()


class StreamHandle:
    """Async iterator over one session's packets; leaving it early cancels the work."""

    def __init__(self, engine: TTSEngine, session: StreamSession, items: asyncio.Queue) -> None:
        self.engine = engine
        self.session = session
        self._items = items

    @property
    def id(self) -> str:
        return self.session.id

    @property
    def metrics(self) -> RequestMetrics:
        return self.session.metrics

    def cancel(self) -> None:
        self.session.cancel()
        self.engine._wake()

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


class TTSEngine:
    def __init__(self, config: EngineConfig, warmup: bool = True) -> None:
        self.config = config
        device = config.torch_device
        check_device_memory(device, config.min_free_gpu_mib)
        load_start = time.perf_counter()
        self.model = TTSModel(config.resolved_model_dir, device, config.torch_dtype, config.max_text_chars,
                              resolve_dtype(config.decoder_dtype, device))
        graphs_on = bool(config.cudagraph_talker and config.cudagraph_cp)
        slots = config.graph_slots if device.type == "cuda" else 0
        self.frames = GraphedCodegen(self.model.codegen, slots, config.graph_max_positions, graphs_on,
                                     compile_steps=bool(config.compile_steps))
        packet_sizes = sorted({1, config.first_packet_tokens, config.packet_tokens})
        windowed = config.left_context if config.decode_mode == "windowed" else None
        self.codec = CodecGraphRunner(self.model.decoder, slots=max(slots, 1), packet_frames=packet_sizes,
                                      use_graphs=bool(config.cudagraph_decoder), check_codes=False,
                                      windowed_left_context=windowed)
        overlap = config.decode_overlap == "on" or (
            config.decode_overlap == "auto" and self.codec.device.type == "cuda")
        self.decode_overlap = overlap  # later packets leave after the next frame
        self._decode_stream = (torch.cuda.Stream(self.codec.device)
                               if overlap and self.codec.device.type == "cuda" else None)
        self.load_s = time.perf_counter() - load_start
        self._sessions: list[StreamSession] = []
        self._lock = threading.Condition()
        self._closed = False
        self._worker = threading.Thread(target=self._run, name="tts-engine", daemon=True)
        self._worker.start()
        self.ready = False
        self.warmup_s = 0.0
        if warmup:
            self.warmup()

    # -- public API ---------------------------------------------------------

    @property
    def speakers(self) -> list[str]:
        return self.model.speakers

    @property
    def languages(self) -> list[str]:
        return self.model.languages

    @property
    def active_sessions(self) -> int:
        with self._lock:
            return len(self._sessions)

    def make_request(self, text: str, speaker: str, language: str | None = "auto",
                     sample: bool | None = None, seed: int | None = None) -> Request:
        """Validate input (raises PromptError with the valid choices)."""
        if sample is None:
            sample = self.config.sample_by_default
        if seed is None and self.config.seed_mode == "fixed":
            seed = self.config.seed
        return self.model.make_request(text, speaker, language, sample=sample, seed=seed)

    def open_stream(self, request: Request, packet_tokens: int | None = None,
                    request_id: str | None = None) -> StreamHandle:
        """Queue a validated request; iterate the handle for its packets."""
        loop = asyncio.get_running_loop()
        items: asyncio.Queue = asyncio.Queue()
        session = self._submit(request, packet_tokens, lambda item: loop.call_soon_threadsafe(items.put_nowait, item),
                               request_id)
        return StreamHandle(self, session, items)

    async def synthesize_pcm(self, request: Request, packet_tokens: int | None = None) -> tuple[np.ndarray, RequestMetrics]:
        """The whole stream as one array (the same samples /tts/stream sends)."""
        async with self.open_stream(request, packet_tokens) as stream:
            parts = [p.pcm async for p in stream]
        return _join(parts), stream.metrics

    def synthesize_blocking(self, request: Request, packet_tokens: int | None = None) -> tuple[np.ndarray, RequestMetrics]:
        """synthesize_pcm for callers without an event loop (warm-up, benchmarks)."""
        items: queue.Queue = queue.Queue()
        session = self._submit(request, packet_tokens, items.put, None)
        parts = []
        while (item := items.get()) is not _DONE:
            if isinstance(item, BaseException):
                raise item
            parts.append(item.pcm)
        return _join(parts), session.metrics

    def warmup(self) -> None:
        """Run a short request end to end, then capture the CUDA graphs (start-up only)."""
        start = time.perf_counter()
        warm = self.model.make_request("Warm up the engine.", self.speakers[0], "auto")
        self.synthesize_blocking(warm)
        self.frames.capture(self.model.prompt(warm))
        self.codec.capture()
        self.warmup_s = time.perf_counter() - start
        self.ready = True
        log.info("engine ready: load %.1f s, warm-up %.1f s", self.load_s, self.warmup_s)

    def _submit(self, request: Request, packet_tokens: int | None, sink: Callable[[object], None],
                request_id: str | None) -> StreamSession:
        n = packet_tokens or self.config.packet_tokens
        if not 1 <= n <= 64:
            raise ValueError(f"packet_tokens must be 1..64, got {n}")
        if self._closed:
            raise RuntimeError("engine is closed")
        session = StreamSession(request, n, sink, request_id)
        with self._lock:
            self._sessions.append(session)
            self._lock.notify()
        return session

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for s in self._sessions:
                s.cancel()
            self._lock.notify()
        self._worker.join(timeout=10)

    # -- worker thread ------------------------------------------------------

    def _wake(self) -> None:
        with self._lock:
            self._lock.notify()

    def _run(self) -> None:
        torch.set_grad_enabled(False)
        while True:
            with self._lock:
                while not self._sessions and not self._closed:
                    self._lock.wait()
                if self._closed and not self._sessions:
                    return
                for s in [s for s in self._sessions if s.cancelled.is_set()]:
                    self._finish(s, "cancelled")
                if not self._sessions:
                    continue
                session = pick_next(self._sessions, time.perf_counter())
                decoded = [s for s in self._sessions
                           if s is not session and s.in_flight is not None and s.in_flight.decoded()]
            for s in decoded:
                self._guarded(s, self._hand_over)
            self._guarded(session, self._advance)

    def _guarded(self, s: StreamSession, step: Callable[[StreamSession], None]) -> None:
        """Run one worker step for `s`; an error ends that request, not the worker."""
        try:
            step(s)
        except Exception as exc:  # noqa: BLE001 - delivered to the consumer
            log.exception("request %s failed", s.id)
            s.metrics.error = f"{type(exc).__name__}: {exc}"
            s.emit(exc)
            with self._lock:
                self._finish(s, "error")

    def _advance(self, s: StreamSession) -> None:
        """Generate one frame for session `s`; decode and emit when a packet is full."""
        model = self.model
        if s.codegen is None:
            s.started_at = time.perf_counter()
            s.metrics.queue_wait_ms = (s.started_at - s.accepted_at) * 1000
            prompt = model.prompt(s.request)
            limit = frame_limit(prompt.text_token_count, self.config.max_new_tokens)
            if s.request.max_frames is not None:
                limit = min(limit, s.request.max_frames)
            s.codegen = self.frames.start(prompt, s.request.params, limit, s.request.seed)
            s.decoder_stream = self.codec.open()
        t0 = time.perf_counter()
        frame = self.frames.next_frame(s.codegen)
        s.pending_codegen_ms += (time.perf_counter() - t0) * 1000
        if frame is not None:
            s.pending.append(frame)
            s.all_codes.append(frame)
        done = frame is None
        packet_frames = s.packet_tokens if s.metrics.packets else min(s.packet_tokens, self.config.first_packet_tokens)
        if s.in_flight is not None and s.in_flight.decoded():
            self._hand_over(s)
        if s.pending and (len(s.pending) >= packet_frames or done):
            self._launch_packet(s, defer=self.decode_overlap and s.first_packet_sent and not done)
        if done or self._silence_stop(s):
            self._hand_over(s)  # the last packet leaves first, outside the lock
            with self._lock:
                self._finish(s, s.codegen.stream.stop_reason or "silence")

    def _launch_packet(self, s: StreamSession, defer: bool) -> None:
        """Decode the pending frames; hand the packet over now, or (defer) once its
        decode has finished, while the worker generates the next frame."""
        self._hand_over(s)  # an earlier packet leaves first
        codes = torch.cat(s.pending, dim=0).T[None]  # [1, 16, n]
        packet = PacketInFlight(codes, len(s.pending), s.pending_codegen_ms)
        side = self._decode_stream
        if side is None:
            t0 = time.perf_counter()
            packet.host_pcm = self.codec.decode(s.decoder_stream, codes)[0].float().cpu()
            packet.decode_ms = (time.perf_counter() - t0) * 1000
        else:
            # after the codes and after `open()`'s zeroing of the slot, both on this device's stream
            side.wait_stream(torch.cuda.current_stream(self.codec.device))
            packet.started = torch.cuda.Event(enable_timing=True)
            packet.done = torch.cuda.Event(enable_timing=True)
            with torch.cuda.stream(side):
                packet.started.record(side)
                pcm = self.codec.decode(s.decoder_stream, codes)[0]
                # pinned, so the copy does not block this thread until the decode is done
                packet.host_pcm = torch.empty(pcm.shape, dtype=torch.float32, pin_memory=True)
                packet.host_pcm.copy_(pcm, non_blocking=True)
                packet.done.record(side)
        s.in_flight = packet
        s.pending, s.pending_codegen_ms = [], 0.0
        if not defer:
            self._hand_over(s)

    def _hand_over(self, s: StreamSession) -> None:
        """Give the session's decoded packet to its consumer (waits for the decode)."""
        packet, s.in_flight = s.in_flight, None
        if packet is None:
            return
        decode_ms = packet.wait()
        t1 = time.perf_counter()
        pcm_np = packet.host_pcm.numpy().copy()  # the (pinned) staging buffer goes back now
        m = s.metrics
        out = PCMPacket(
            index=m.packets, pcm=pcm_np, frames=packet.frames,
            t_ready_ms=(t1 - s.accepted_at) * 1000,
            codegen_ms=packet.codegen_ms, decode_ms=decode_ms, glue_ms=0.0,
        )
        s.silent_packets = s.silent_packets + 1 if float(np.sqrt(np.mean(pcm_np**2))) < SILENCE_RMS else 0
        out.glue_ms = (time.perf_counter() - t1) * 1000
        m.frames += out.frames
        m.packets += 1
        m.audio_s += len(pcm_np) / SAMPLE_RATE
        m.codegen_wall_total_ms += out.codegen_ms
        m.decode_wall_total_ms += out.decode_ms
        m.glue_wall_total_ms += out.glue_ms
        if m.ttfa_ms is None:
            m.ttfa_ms = out.t_ready_ms
        if self.config.packet_metrics:
            m.packet_log.append({k: v for k, v in asdict(out).items() if k != "pcm"})
        if self.config.packet_trace:
            log.info("request %s packet %d frames %d ready %.1f ms codegen %.1f decode %.1f",
                     s.id, out.index, out.frames, out.t_ready_ms, out.codegen_ms, out.decode_ms)
        s.emit(out)

    def _silence_stop(self, s: StreamSession) -> bool:
        n = self.config.silence_packets
        return n > 0 and s.silent_packets >= n

    def _finish(self, s: StreamSession, reason: str) -> None:
        """Remove a session (caller holds the lock) and close its stream."""
        if s.finished:
            return
        s.finished = True
        if s in self._sessions:
            self._sessions.remove(s)
        if (s.in_flight is not None or reason == "error") and self._decode_stream is not None:
            # cancelled or failed: the packet in flight (or a decode cut short) is dropped, but
            # the decode stream must be done with this session's slot before it is released
            self._decode_stream.synchronize()
        s.in_flight = None
        m = s.metrics
        m.stop_reason = "cancelled" if s.cancelled.is_set() else reason
        m.wall_ms = (time.perf_counter() - s.accepted_at) * 1000
        m.rtf = (m.wall_ms / 1000 / m.audio_s) if m.audio_s else None
        if s.codegen is not None:
            m.graph_stats = s.codegen.stats.to_dict()
            self.frames.release(s.codegen)
        if s.decoder_stream is not None:
            m.graph_stats["decoder_graph_stats"] = s.decoder_stream.stats.to_dict()
            self.codec.close(s.decoder_stream)
        if self.config.code_dump and s.all_codes:
            self._dump_codes(s)
        s.codegen = s.decoder_stream = None  # free caches now, not when the consumer lets go
        s.emit(_DONE)

    def _dump_codes(self, s: StreamSession) -> None:
        folder = self.config.resolved_code_dump_dir
        folder.mkdir(parents=True, exist_ok=True)
        codes = torch.cat(s.all_codes, dim=0).cpu().numpy()
        np.save(folder / f"{s.id}.npy", codes)
        meta = {"request_id": s.id, "text": s.request.text, "speaker": s.request.speaker,
                "language": s.request.language, "frames": int(codes.shape[0]), "model_dir": str(self.model.model_dir)}
        (folder / f"{s.id}.json").write_text(json.dumps(meta, ensure_ascii=False, indent=2))


def check_device_memory(device: torch.device, min_free_mib: int) -> None:
    if device.type != "cuda":
        return
    free, total = torch.cuda.mem_get_info(device)
    free_mib = free // 2**20
    if free_mib < min_free_mib:
        raise EngineStartError(
            f"{device} has {free_mib} MiB free of {total // 2**20} MiB; the engine needs at least "
            f"{min_free_mib} MiB (TTS_MIN_FREE_GPU_MIB). Lower the LLM's gpu_memory_utilization "
            "or stop other processes on this GPU."
        )


def _join(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)


def load_codes(path: str | Path) -> torch.Tensor:
    """A codes dump ([frames, 16] .npy) as a LongTensor."""
    codes = np.load(path)
    if codes.ndim != 2 or codes.shape[1] != 16:
        raise ValueError(f"{path}: expected an array of shape [frames, 16], got {codes.shape}")
    return torch.from_numpy(codes.astype(np.int64))

