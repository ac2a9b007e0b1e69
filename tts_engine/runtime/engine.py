"""TTSEngine: one loaded model serving many concurrent streams with continuous batching.

One worker thread owns every model call. Each turn of its loop:

1. the step in flight lands (its codes and PCM reach the host) and decides who
   leaves the batch: a stream whose frame is EOS or its last ends now (its last
   packet sent), the others take their frame, a newcomer's first packet leaves
   at once (first packets first); ended and cancelled streams free their rows,
   so the batch's rows are final;
2. the oldest queued streams are admitted while the capacity allows and every
   running stream can spare the time (runtime/admission.py): all of them in one
   prefill, straight into the rows after the batch, which they join; those left
   that waited past TTS_QUEUE_TIMEOUT_S are refused;
3. the next step is launched: every active stream gets one frame, all in one
   batched talker step, one predictor loop and one decoder step
   (runtime/stepper.py); on a GPU the launch returns while the device works;
4. meanwhile, the landed step's packets are sent: a packet per stream whose
   frames are complete (packetising, silence detection, metrics, hand-off to
   the consumer), so this host work overlaps the next step on the device. On a
   CPU, where a launch computes the whole step before it returns, they are sent
   as soon as their step has landed instead;
5. while the step still runs, the next waiters' prompts are built (tokens and
   embeddings, host work that would otherwise hold the batch in their
   admission); on a CPU there is no such time.

A stream that ends in 4 (silence, a failing hand-over) keeps its row while the
step runs; that step's frame of it is dropped when the step lands, and the row
is freed then. Streams join and leave between steps; the graphs never change. A
failure in one stream's hand-over ends that stream only. Each turn is timed by
phase (runtime/turns.py): one longer than a frame is logged with where its time went.

    engine = TTSEngine(EngineConfig.from_env())      # loads, warms up, captures
    async with engine.open_stream(request) as stream:
        await stream.admitted()                       # or OverCapacity
        async for packet in stream:                   # PCMPacket
            play(packet.pcm)
    await stream.closed()                             # final RequestMetrics
"""

from __future__ import annotations

import asyncio
import logging
import math
import queue
import statistics
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import numpy as np
import torch

from streamtalk_common.paths import cache_root

from ..codec_stream import CodecStreamDecoder, WindowedCodecDecoder
from ..codegen import frame_limit
from ..config import EngineConfig, resolve_dtype
from ..errors import (
    EngineClosed,
    EngineOutOfMemory,
    EngineStartError,
    OverCapacity,
    ReplyTooLong,
    RequestError,
    TextTooLong,
    TTSError,
)
from ..sampling import seed_as_int64
from ..synthesis import Request, TTSModel
from .admission import REALTIME_BUDGET_MS, Admission
from .code_dump import dump_codes
from .compile_cache import CompileCache
from .compiled import (
    compile_decoder_activations,
    compile_decoder_layers,
    compile_layers,
    compiled_graphs,
    precompile,
)
from .memory import MemoryAccount, MemoryProbe
from .rows import PrefillStage, RowPool, row_bytes
from .session import _DONE, StreamHandle, StreamSession, call_in_loop
from .stepper import PREFILL_GROUPS, PREFILL_TOKENS, BatchStepper, RowStart, invariance_for
from .turns import TurnClock

log = logging.getLogger("tts_engine")

CPU_ROWS = 32  # batch rows on a CPU (TTS_MAX_BATCH=0)
MAX_ROWS = 256
GRAPH_RESERVE_MIB = 2048  # GPU memory kept for graphs and activations when sizing the rows
CALIBRATION_STEPS = 3  # timed steps per bucket at start-up
# The worker shares the GIL with its consumers' event loops (the HTTP server's, the
# agent's). Each time it lets go (a CUDA call, a system call) while a loop's thread is
# busy, it gets the GIL back only when that thread drops it: by default after up to 5 ms,
# so a turn that lets go a hundred times can lose hundreds of ms. 0.5 ms bounds each wait.
# Measured on an H100, 192 closed-loop streams: 122 late packets at 5 ms, none at 0.5 ms
# (docs/PERFORMANCE.md, "Slow turns").
GIL_SWITCH_INTERVAL_S = 0.0005


@dataclass
class Flight:
    """The step on the device: its streams (sessions[i] is row i during the step) and when
    it was launched."""

    sessions: list[StreamSession]
    launched_at: float
    device_ms: float = 0.0  # codegen + decode, known once it lands
    landed_at: float = 0.0  # its frames taken


@dataclass
class StepTotals:
    """Sums over every step since start (/metrics): two readings give the means between them."""

    steps: int = 0
    rows: int = 0  # streams stepped (rows / steps: the mean batch)
    period_ms: float = 0.0  # launch -> landed, its frames taken (admission control's period)
    device_ms: float = 0.0  # codegen + decode on the device (CUDA events; the host clock on a CPU)
    hand_over_ms: float = 0.0  # sending the landed step's packets while the next step runs
    settle_ms: float = 0.0  # freeing rows of streams cancelled or ended outside a landing
    admissions: int = 0
    admitted: int = 0  # newcomers admitted (over admissions: the mean group)
    admission_ms: float = 0.0  # their prompts and prefills, the batch waiting
    admission_prompt_ms: float = 0.0  # of which building the prompts not built ahead
    prompts_ahead: int = 0  # prompts built while a step ran (no admission waited for them)

    def report(self) -> dict[str, float]:
        return {"steps": self.steps, "step_rows_sum": self.rows,
                "step_period_ms_sum": self.period_ms, "step_device_ms_sum": self.device_ms,
                "step_hand_over_ms_sum": self.hand_over_ms, "step_settle_ms_sum": self.settle_ms,
                "admissions": self.admissions, "admitted_sum": self.admitted,
                "admission_ms_sum": self.admission_ms,
                "admission_prompt_ms_sum": self.admission_prompt_ms,
                "prompts_built_ahead": self.prompts_ahead}


@dataclass
class StartupPhases:
    """Seconds per start-up phase: logged at ready, /readyz `startup`, /metrics."""

    load_s: float = 0.0  # model, tokenizer, decoder, batch rows
    compile_s: float = 0.0  # TTS_COMPILE=1: the compile cache and every compiled variant
    warmup_s: float = 0.0  # the two warm-up syntheses: eager, then graphed
    capture_s: float = 0.0  # the CUDA graphs of every bucket, span and prefill shape
    calibrate_s: float = 0.0  # timing every bucket's step for admission control

    @property
    def total_s(self) -> float:
        return self.load_s + self.compile_s + self.warmup_s + self.capture_s + self.calibrate_s

    @contextmanager
    def timed(self, phase: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            setattr(self, f"{phase}_s", getattr(self, f"{phase}_s") + time.perf_counter() - start)

    def report(self) -> dict[str, float]:
        return {k: round(v, 2) for k, v in {**asdict(self), "total_s": self.total_s}.items()}


class TTSEngine:
    def __init__(self, config: EngineConfig, warmup: bool = True) -> None:
        self.config = config
        device = config.torch_device
        invariance = invariance_for(bool(config.batch_invariant), device)
        if invariance == "kernels" and config.compile_steps == "1":
            raise EngineStartError("TTS_COMPILE=1 does not combine with TTS_BATCH_INVARIANT=1 on a "
                                   "GPU: the compiled layers bring their own kernels, whose sums "
                                   "depend on the batch; set TTS_COMPILE=0 (auto leaves compile "
                                   "off in batch-invariant mode)")
        check_device_memory(device, config.min_free_gpu_mib)
        self._probe = MemoryProbe(device)
        self.memory: MemoryAccount | None = None  # measured by warmup()
        self.startup = StartupPhases()
        with self.startup.timed("load"):
            self.model = TTSModel(config.resolved_model_dir, device, config.torch_dtype,
                                  config.max_text_chars,
                                  resolve_dtype(config.decoder_dtype, device))
            decoder = CodecStreamDecoder(self.model.decoder, tf32=config.decoder_dtype == "tf32")
            self._probe.mark("loaded")
            rows = batch_rows(config, self.model, decoder)
            self.pool = RowPool(self.model.codegen, decoder, rows, config.row_positions)
        self.compile_cache: CompileCache | None = None
        if config.compiled and invariance != "kernels":
            with self.startup.timed("compile"):
                self.compile_cache = CompileCache.open(cache_root(), self.model.config,
                                                       self.model.codegen.dtype, self.model.device)
                compile_layers(self.model.codegen.talker)
                compile_decoder_activations(self.model.decoder)
                compile_decoder_layers(decoder)
        try:
            self.stepper = BatchStepper(self.model.codegen, decoder, self.pool, config.cuda_graphs,
                                        invariance)
        except ImportError as exc:
            raise EngineStartError(f"TTS_BATCH_INVARIANT=1 on a GPU runs Triton kernels, and "
                                   f"Triton does not import ({exc}); install the triton that "
                                   f"matches torch, or set TTS_BATCH_INVARIANT=0") from exc
        self._probe.mark("rows")
        self.windowed = (WindowedCodecDecoder(self.model.decoder, config.left_context)
                         if config.decode_mode == "windowed" else None)
        self.admission = Admission(self.stepper.buckets, config.max_active_streams,
                                   config.queue_timeout_s, realtime=config.realtime_admission)
        self._queued: deque[StreamSession] = deque()
        self._active: list[StreamSession] = []  # index = row
        self._admitting = 0  # taken from the queue, not yet in a row: the prefill runs unlocked
        self._lock = threading.Condition()
        self._closed = False
        self._flight: Flight | None = None  # the step the device runs (worker thread only)
        self.last_step_ms = 0.0  # the last step's period (as in StepTotals)
        self.last_batch = 0
        self.step_totals = StepTotals()
        self.turns = TurnClock()
        self.underruns = 0
        sys.setswitchinterval(min(sys.getswitchinterval(), GIL_SWITCH_INTERVAL_S))
        self._worker = threading.Thread(target=self._run, name="tts-engine", daemon=True)
        self._worker.start()
        self.ready = False
        if warmup:
            self.warmup()
        self.turns.arm()  # the warm-up's turns (eager, compiling) are no load's

    # -- public API ---------------------------------------------------------

    @property
    def load_s(self) -> float:
        return self.startup.load_s

    @property
    def warmup_s(self) -> float:
        """Start-up after the load: compile, warm-up, capture, calibration."""
        return self.startup.total_s - self.startup.load_s

    @property
    def speakers(self) -> list[str]:
        return self.model.speakers

    @property
    def languages(self) -> list[str]:
        return self.model.languages

    @property
    def active_sessions(self) -> int:
        """Streams holding a row or waiting for one."""
        with self._lock:
            return len(self._active) + len(self._queued) + self._admitting

    @property
    def queued_sessions(self) -> int:
        with self._lock:
            return len(self._queued)

    @property
    def capacity(self) -> int:
        return self.admission.capacity

    @property
    def capacity_left(self) -> int:
        return max(0, self.admission.capacity - self.active_sessions)

    def make_request(self, text: str, speaker: str, language: str | None = "auto",
                     sample: bool | None = None, seed: int | None = None) -> Request:
        """Validate input (raises a RequestError naming what is valid)."""
        if sample is None:
            sample = self.config.sample_by_default
        if seed is None and self.config.seed_mode == "fixed":
            seed = self.config.seed
        if seed is not None and not -(2**63) <= seed < 2**64:
            raise RequestError(f"seed {seed} does not fit 64 bits; valid: -2**63 .. 2**64-1")
        return self.model.make_request(text, speaker, language, sample=sample, seed=seed)

    def open_stream(self, request: Request, packet_tokens: int | None = None,
                    request_id: str | None = None) -> StreamHandle:
        """Queue a validated request; `await handle.admitted()`, then iterate it for packets."""
        loop = asyncio.get_running_loop()
        items: asyncio.Queue = asyncio.Queue()
        session = self._new_session(request, packet_tokens, request_id,
                                    lambda item: call_in_loop(loop, items.put_nowait, item))
        handle = StreamHandle(self, session, items)
        self._submit(session)
        return handle

    async def synthesize_pcm(self, request: Request, packet_tokens: int | None = None):
        """The whole stream as one array (the same samples /tts/stream sends), and its metrics."""
        async with self.open_stream(request, packet_tokens) as stream:
            parts = [p.pcm async for p in stream]
        return _join(parts), await stream.closed()

    def synthesize_blocking(self, request: Request, packet_tokens: int | None = None):
        """synthesize_pcm for callers without an event loop (warm-up, benchmarks)."""
        items: queue.Queue = queue.Queue()
        done = threading.Event()
        session = self._new_session(request, packet_tokens, None, items.put)
        session.on_closed = done.set
        self._submit(session)
        parts = []
        while (item := items.get()) is not _DONE:
            if isinstance(item, BaseException):
                raise item
            parts.append(item.pcm)
        done.wait()
        return _join(parts), session.metrics

    def warmup(self) -> None:
        """Compile (TTS_COMPILE=1), run a short request end to end, capture the graphs, time
        the buckets, account for the GPU memory (start-up only). Out of GPU memory here (the
        largest buckets' activations) is a start-up error."""
        warm = self.model.make_request("Warm up the engine.", self.speakers[0], "auto")
        phases = self.startup
        try:
            if self.compile_cache is not None:
                log.info("start-up: compiling the decoder layers (cache %s; an empty one takes a "
                         "minute or more)", self.compile_cache.dir)
                with phases.timed("compile"):
                    self._compile()
                graphs = compiled_graphs()
            log.info("start-up: warm-up synthesis")
            with phases.timed("warmup"):
                self.synthesize_blocking(warm)
            self._probe.mark("before_capture", settle=True)
            with phases.timed("capture"):
                self.stepper.capture()
            self._probe.mark("captured", settle=True)
            log.info("start-up: timing the batch buckets")
            with phases.timed("calibrate"):
                self._calibrate()
            # the first, cold admission would gate for minutes
            self.admission.forget_admission_cost()
            with phases.timed("warmup"):
                self.synthesize_blocking(warm)  # the graphed path once, before real requests
        except (torch.OutOfMemoryError, EngineOutOfMemory) as exc:
            self.close()
            raise EngineStartError(
                f"the GPU ran out of memory while warming up {self.pool.rows} rows of "
                f"{self.pool.positions} positions (their graphs and activations grow with the "
                f"rows): set TTS_MAX_BATCH to fewer rows (for example "
                f"{max(1, self.pool.rows // 2)}) or free GPU memory ({exc})") from exc
        if self.compile_cache is not None:
            self.compile_cache.save()
            if (late := compiled_graphs() - graphs) > 0:
                log.warning("%d graphs were compiled after the compile phase: the engine runs a "
                            "variant that runtime/compiled.py's precompile does not cover", late)
        self._probe.mark("ready")
        self.memory = self._probe.account(self.pool.rows, self.pool.positions, self.pool.nbytes)
        self.ready = True
        log.info("engine ready: %d rows of %d positions, capacity %d streams; "
                 "start-up %.1f s: %s%s",
                 self.pool.rows, self.pool.positions, self.capacity, phases.total_s,
                 ", ".join(f"{k.removesuffix('_s')} {v:.1f} s"
                           for k, v in phases.report().items() if k != "total_s"),
                 f"; compile cache {self.compile_cache.report()}" if self.compile_cache else "")
        log.info("%s", self.memory.summary())

    def _compile(self) -> None:
        try:
            self.compile_cache.compile(lambda: precompile(self.model.codegen.talker,
                                                          self.stepper.decoder,
                                                          self.stepper.spans[0]))
        except Exception as exc:
            self.close()
            raise EngineStartError(f"torch.compile of the decoder layers failed "
                                   f"({type(exc).__name__}: {exc}); "
                                   "TTS_COMPILE=0 starts the engine without it") from exc

    def startup_report(self) -> dict:
        """Seconds per start-up phase, and (TTS_COMPILE=1) what came from the compile cache."""
        report: dict = self.startup.report()
        report["compile"] = (None if self.compile_cache is None
                             else {**self.compile_cache.report(), "graphs": compiled_graphs()})
        return report

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for s in (*self._queued, *self._active):
                s.cancel()
            self._lock.notify()
        self._worker.join(timeout=10)
        self.turns.close()

    def wake(self) -> None:
        with self._lock:
            self._lock.notify()

    def stats(self) -> dict:
        """What /metrics and /readyz report."""
        device = self.config.torch_device
        cuda = device.type == "cuda"
        peak = torch.cuda.max_memory_allocated(device) / 2**20 if cuda else 0.0
        reserved = torch.cuda.memory_reserved(device) / 2**20 if cuda else 0.0
        return {"active": len(self._active), "queued": self.queued_sessions,
                "rejected": self.admission.rejected, "rows": self.pool.rows,
                "batch": self.last_batch, "step_ms": self.last_step_ms,
                "capacity": self.capacity, "capacity_left": self.capacity_left,
                "step_slowdown": self.admission.slowdown, "underruns": self.underruns,
                "gpu_memory_peak_mib": peak, "gpu_memory_reserved_mib": reserved,
                **self.step_totals.report(), **self.turns.report()}

    # -- submission -----------------------------------------------------------

    def _new_session(self, request: Request, packet_tokens: int | None, request_id: str | None,
                     sink: Callable[[object], None]) -> StreamSession:
        n = packet_tokens or self.config.packet_tokens
        if not 1 <= n <= 64:
            raise RequestError(f"packet_tokens must be 1..64, got {n}")
        return StreamSession(request, n, self.config.first_packet_tokens, sink, request_id)

    def _submit(self, session: StreamSession) -> None:
        with self._lock:
            if self._closed:
                raise EngineClosed("the engine is closed")
            if len(self._queued) >= self.pool.rows:
                self.admission.rejected += 1
                raise OverCapacity(f"{len(self._queued)} requests already wait for the engine; "
                                   f"retry in {self.admission.retry_after_s} s",
                                   self.admission.retry_after_s)
            self._queued.append(session)
            self._lock.notify()

    # -- worker thread ------------------------------------------------------

    def _run(self) -> None:
        torch.set_grad_enabled(False)
        while True:
            with self._lock:
                idle = False
                while (self._flight is None and not self._queued and not self._active
                       and not self._closed):
                    self._lock.wait()
                    idle = True
                if self._closed and self._flight is None and not self._queued and not self._active:
                    return
            if idle:  # waiting for work is no turn's time
                self.turns.restart()
            self._turn()

    def _turn(self) -> None:
        """One turn of the loop (the module's docstring). Its streams are its locals only: an
        idle worker holds none of them."""
        turns = self.turns
        landed, flight = None, self._flight
        if flight is not None:  # 1: the rows of the next step are settled first
            with turns.phase("land"):
                landed = self._guarded(flight.sessions, self._land)
                if landed and not self.stepper.launch_returns_early:
                    # nothing to overlap: sent after the launch, every packet would wait a
                    # whole step (and any prefill), a hole after a reply's first packet
                    self._send_packets(landed)
                    landed = []
        with turns.phase("settle"):
            self._settle_rows()
        if landed is not None:
            self._observe_step(flight)
        with turns.phase("admit"):  # 2
            if newcomers := self._next_admissions():
                self._guarded(newcomers, self._admit, newcomers)
                with self._lock:
                    self._admitting = 0
        if batch := list(self._active):  # 3
            with turns.phase("launch"):
                self._guarded(batch, self._launch, batch)
        if landed:  # 4: while the device runs the step just launched
            with turns.phase("hand_over"):
                self._send_packets(landed)
        with turns.phase("prompts"):
            self._build_prompts_ahead()  # 5: while it still runs
        turns.end_turn(len(batch), len(newcomers))

    def _build_prompts_ahead(self) -> None:
        """The next waiters' prompts, built while the device runs a step (their host work,
        most of an admission's cost on a GPU, then keeps no stream waiting), until it lands.
        A prompt that fails is left to the admission, which refuses its request."""
        with self._lock:
            waiters = [s for s in list(self._queued)[:PREFILL_GROUPS[-1]] if s.prompt is None]
        for s in waiters:
            if not self.stepper.running():
                return
            try:
                s.prompt = self.model.prompt(s.request)
            except RequestError:
                continue
            self.step_totals.prompts_ahead += 1

    def _next_admissions(self) -> list[StreamSession]:
        """Drop cancelled waiters; take the oldest waiters that may be admitted now; refuse
        the rest of those that waited past TTS_QUEUE_TIMEOUT_S. A waiter the worker reaches
        late (a long turn on a busy CPU) is still admitted if there is room for it now."""
        with self._lock:
            now = time.perf_counter()
            for s in [s for s in self._queued if s.cancelled.is_set()]:
                self._queued.remove(s)
                self._finish(s, "cancelled")
            group: list[StreamSession] = []
            while self._queued and len(group) < PREFILL_GROUPS[-1]:
                batch = len(self._active) + len(group)
                if batch >= self.pool.rows:
                    break
                margin_s = self._least_margin_s(now, batch + 1)
                if not self.admission.may_admit(batch, len(group) + 1, margin_s):
                    break
                group.append(self._queued.popleft())
            for s in [s for s in self._queued
                      if now - s.accepted_at > self.admission.queue_timeout_s]:
                self._queued.remove(s)
                self.admission.rejected += 1
                self._finish(s, "over_capacity", OverCapacity(
                    f"no capacity for {self.admission.queue_timeout_s:g} s "
                    f"(TTS_QUEUE_TIMEOUT_S): {len(self._active)} streams are active, "
                    f"capacity {self.capacity}; retry in {self.admission.retry_after_s} s",
                    self.admission.retry_after_s))
            self._admitting = len(group)
            return group

    def _least_margin_s(self, now: float, batch: int) -> float:
        """The smallest margin to a playback deadline among the running streams, were the
        batch to grow to `batch` streams (runtime/session.py)."""
        frame_s = self.admission.frame_ms(batch) / 1000
        return min((s.margin_s(now, frame_s) for s in self._active), default=math.inf)

    def _guarded(self, sessions: list[StreamSession], work: Callable,
                 *args: object) -> object | None:
        """`work(*args)` for `sessions`; an error ends those sessions, not the worker (None
        then)."""
        try:
            return work(*args)
        except Exception as exc:  # noqa: BLE001 - delivered to the consumers
            if isinstance(exc, torch.OutOfMemoryError):
                exc = EngineOutOfMemory(f"the GPU ran out of memory: {exc}")
            if isinstance(exc, RequestError):  # the caller's mistake (a prompt too long for a row)
                log.info("request refused: %s", exc)
            else:
                log.exception("step failed for %d request(s)", len(sessions))
            for s in sessions:
                self._finish(s, "error", exc)
            return None

    def _admit(self, sessions: list[StreamSession]) -> None:
        """Prefill the newcomers into the rows after the batch, which they then join. A
        newcomer whose request cannot run (a prompt too long for a row) ends alone."""
        start = time.perf_counter()
        joining: list[tuple[StreamSession, RowStart]] = []
        for s in sessions:
            s.started_at = start
            s.metrics.queue_wait_ms = (start - s.accepted_at) * 1000
            try:
                joining.append((s, self._row_start(s)))
            except RequestError as exc:
                log.info("request refused: %s", exc)
                self._finish(s, "error", exc)
        if not joining:
            return
        first_row = len(self._active)
        prompts_built = time.perf_counter()
        self.stepper.prefill(first_row, [start_ for _, start_ in joining])
        # the device's prefill is over here: it ends with copies from the host, which wait for it
        ms = (time.perf_counter() - start) * 1000
        self.admission.observe_admission(len(sessions), ms)
        totals = self.step_totals
        totals.admissions += 1
        totals.admitted += len(sessions)
        totals.admission_ms += ms
        totals.admission_prompt_ms += (prompts_built - start) * 1000
        for i, (s, row_start) in enumerate(joining):
            s.row, s.position = first_row + i, row_start.start_position
            s.metrics.graph_stats = {"codegen_graph_used": self.stepper.graphed,
                                     "eager_reason": self.stepper.eager_reason}
            self._active.append(s)
            s.on_admitted(None)

    def _row_start(self, s: StreamSession) -> RowStart:
        """The newcomer's prompt and frame limit (raises TextTooLong when no row holds it)."""
        prompt = s.prompt or self.model.prompt(s.request)
        length = prompt.embeds.shape[1]
        row_frames = self.pool.positions - length + 1  # the prompt's last position gives frame 0
        if row_frames < 1:
            raise TextTooLong(f"the text makes a prompt of {length} positions; a row holds "
                              f"{self.pool.positions} (TTS_ROW_POSITIONS): send shorter text")
        s.text_tokens = prompt.text_token_count
        limit = frame_limit(s.text_tokens, self.config.max_new_tokens)
        if s.request.max_frames is not None:
            limit = min(limit, s.request.max_frames)
        s.frame_limit, s.row_limited = min(limit, row_frames), row_frames < limit
        if self.windowed is not None:
            s.windowed_state = self.windowed.new_state(1)
        return RowStart(prompt, s.sampled, seed_as_int64(s.request.seed or 0),
                        s.request.params.min_new_tokens)

    def _launch(self, sessions: list[StreamSession]) -> None:
        """Start the next step of `sessions` (rows 0..n-1) on the device."""
        n = len(sessions)
        launched_at = time.perf_counter()
        self.stepper.launch(n, [s.position for s in sessions], any(s.sampled for s in sessions))
        for s in sessions:  # every row's KV at `position` is being written (a move copies it)
            s.position += 1
            s.metrics.batch_max = max(s.metrics.batch_max, n)
        self._flight = Flight(sessions, launched_at)

    def _land(self) -> list[StreamSession]:
        """Wait for the step in flight and decide who leaves the batch (step 1 of the loop).
        The streams that go on have their frame; their packets are for _send_packets."""
        flight, self._flight = self._flight, None
        result = self.stepper.collect()
        flight.device_ms = result.codegen_ms + result.decode_ms
        eos = result.codes[:, 0] == self.model.codegen.eos_id
        going_on = []
        # sessions[i] is row i: a stream that ends here keeps its row until _settle_rows
        for i, s in enumerate(flight.sessions):
            if s.finished:  # ended while the step ran: its frame is dropped
                continue
            try:
                if eos[i]:
                    self._end(s, "eos")
                    continue
                self._take_frame(s, result.codes[i], result.pcm[i], result.codegen_ms,
                                 result.decode_ms)
                if len(s.codes) >= s.frame_limit:
                    self._end_at_frame_limit(s)
                    continue
                if not s.metrics.packets:
                    self._send_if_complete(s)  # first packets first: the time to first audio
                if not s.finished:
                    going_on.append(s)
            except Exception as exc:  # noqa: BLE001 - this stream only
                log.exception("request %s failed", s.id)
                self._finish(s, "error", exc)
        flight.landed_at = time.perf_counter()
        return going_on

    def _settle_rows(self) -> None:
        """End the cancelled streams, then free the rows of every stream that ended (at the
        landing, while the step ran, or now), all at once (timed apart from the step's
        period: their cost is per stream, not per step)."""
        start = time.perf_counter()
        for s in [s for s in self._active if s.cancelled.is_set()]:
            self._finish(s, "cancelled")
        if any(s.finished for s in self._active):
            self._compact_rows()
        ms = (time.perf_counter() - start) * 1000
        self.step_totals.settle_ms += ms
        self.admission.observe_settle(ms)

    def _compact_rows(self) -> None:
        """Drop the ended streams from the rows: the streams kept beyond the new end move
        into the freed rows below it, in one move of the pool (rows stay compact, and row i
        is self._active[i])."""
        active = self._active
        n = sum(not s.finished for s in active)
        holes = [row for row in range(n) if active[row].finished]
        movers = [s for s in active[n:] if not s.finished]
        self.pool.move([(s.row, row, s.position) for s, row in zip(movers, holes, strict=True)])
        ended = [s for s in active if s.finished]
        for s, row in zip(movers, holes, strict=True):
            s.row = row
            active[row] = s
        del active[n:]
        for s in ended:
            s.row = None
            s.let_go()

    def _observe_step(self, flight: Flight) -> None:
        """The landed step's period, launch to its frames taken (what streams wait between
        frames; admissions and settled rows are timed on their own), for admission control."""
        n = len(flight.sessions)
        self.last_step_ms, self.last_batch = (flight.landed_at - flight.launched_at) * 1000, n
        self.admission.observe(n, self.last_step_ms)
        totals = self.step_totals
        totals.steps += 1
        totals.rows += n
        totals.period_ms += self.last_step_ms
        totals.device_ms += flight.device_ms

    def _send_packets(self, sessions: list[StreamSession]) -> None:
        """The landed step's complete packets, while the device runs the next step (step 4
        of the loop; on a CPU, before the rows are settled). A stream that ends while a step
        runs keeps its row until that step lands."""
        start = time.perf_counter()
        for s in sessions:
            if s.finished:  # cancelled, or the launch failed
                continue
            try:
                self._send_if_complete(s)
            except Exception as exc:  # noqa: BLE001 - this stream only
                log.exception("request %s failed", s.id)
                self._finish(s, "error", exc)
        ms = (time.perf_counter() - start) * 1000
        self.step_totals.hand_over_ms += ms
        self.admission.observe_hand_over(ms)

    def _take_frame(self, s: StreamSession, codes: np.ndarray, pcm: np.ndarray,
                    codegen_ms: float, decode_ms: float) -> None:
        """Give s its frame (in windowed mode its PCM is decoded here, no step being in flight)."""
        if s.windowed_state is not None:
            frame = torch.from_numpy(codes).to(self.model.device)[None, :, None]
            pcm = self.windowed.step(s.windowed_state, frame,
                                     check_codes=False)[0].float().cpu().numpy()
        s.add_frame(codes, pcm, codegen_ms, decode_ms)

    def _send_if_complete(self, s: StreamSession) -> None:
        """Send s's packet once its frames are in; TTS_DEEP_STREAM_SILENCE_PACKETS silent
        packets in a row end s."""
        if len(s.pending) < s.next_packet_frames:
            return
        self._send_packet(s)
        n = self.config.silence_packets
        if n > 0 and s.silent_packets >= n:
            self._end(s, "silence")

    def _end_at_frame_limit(self, s: StreamSession) -> None:
        if s.row_limited:
            self._end(s, "row_full", ReplyTooLong(
                f"the reply reached {len(s.codes)} frames, all its row holds (TTS_ROW_POSITIONS="
                f"{self.pool.positions}); the audio so far was sent"))
        else:
            self._end(s, "max_frames")

    def _send_packet(self, s: StreamSession) -> None:
        packet = s.take_packet(bool(self.config.packet_metrics))
        if self.config.packet_trace:
            log.info("request %s packet %d frames %d ready %.1f ms codegen %.1f decode %.1f",
                     s.id, packet.index, packet.frames, packet.t_ready_ms, packet.codegen_ms,
                     packet.decode_ms)
        s.emit(packet)

    def _end(self, s: StreamSession, reason: str, error: TTSError | None = None) -> None:
        if s.pending:
            self._send_packet(s)  # the last packet may be short
        self._finish(s, reason, error)

    def _finish(self, s: StreamSession, reason: str, error: BaseException | None = None) -> None:
        """Close a session: its error (if any), metrics, dump, end of stream. A session that
        holds a row keeps it until the next _settle_rows frees it, before anything else uses
        the rows; its consumer learns it is closed then."""
        if s.finished:
            return
        s.finished = True
        if error is not None:
            s.metrics.error = f"{type(error).__name__}: {error}"
            s.emit(error)
        s.close_metrics(reason)
        self.underruns += s.metrics.underruns
        if self.config.code_dump and s.codes:
            dump_codes(self.config.resolved_code_dump_dir, s.id, np.stack(s.codes),
                       text=s.request.text, speaker=s.request.speaker,
                       language=s.request.language, model_dir=str(self.model.model_dir),
                       stop_reason=s.metrics.stop_reason, text_tokens=s.text_tokens)
        s.on_admitted(error)  # a stream that ends before its admission stops waiting too
        if s.row is None:  # else once _compact_rows has freed its row
            s.let_go()

    def _calibrate(self) -> None:
        """Time the buckets' steps on idle rows (start-up only): one untimed step first (a
        shape's first run sets up kernels and buffers), then the median of CALIBRATION_STEPS.
        Steps only grow with the batch, so the first bucket too slow for real time is the
        last one timed (admission extrapolates beyond it)."""
        for b in self.stepper.buckets:
            self.stepper.reset()  # from position 0: warm-up and earlier buckets moved the rows
            self.stepper.step(b, [0] * b, mixed=False)
            times = []
            for _ in range(CALIBRATION_STEPS):
                start = time.perf_counter()
                self.stepper.step(b, [0] * b, mixed=False)
                times.append((time.perf_counter() - start) * 1000)
            ms = statistics.median(times)
            self.admission.measured(b, ms)
            if ms > REALTIME_BUDGET_MS:
                break
        self.stepper.reset()


def batch_rows(config: EngineConfig, model: TTSModel, decoder: CodecStreamDecoder) -> int:
    """TTS_MAX_BATCH, or (0) as many rows as free GPU memory allows after a reserve."""
    device = model.device
    if device.type != "cuda":
        return config.max_batch or CPU_ROWS
    per_row = row_bytes(model.codegen, decoder, config.row_positions)
    free, _ = torch.cuda.mem_get_info(device)
    usable = free - GRAPH_RESERVE_MIB * 2**20 - PrefillStage.nbytes(model.codegen, PREFILL_TOKENS)
    if config.max_batch:
        need = config.max_batch * per_row
        if need > usable:
            raise EngineStartError(
                f"TTS_MAX_BATCH={config.max_batch} rows of {config.row_positions} positions need "
                f"{need / 2**20:.0f} MiB (+{GRAPH_RESERVE_MIB} MiB for graphs); {device} has "
                f"{free / 2**20:.0f} MiB free after loading the model. Lower TTS_MAX_BATCH or "
                f"TTS_ROW_POSITIONS (0 = auto).")
        return config.max_batch
    rows = min(MAX_ROWS, usable // per_row)
    if rows < 1:
        raise EngineStartError(f"{device} has {free / 2**20:.0f} MiB free after loading the "
                               f"model; one row needs {per_row / 2**20:.0f} MiB + "
                               f"{GRAPH_RESERVE_MIB} MiB for graphs")
    return int(rows)


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
