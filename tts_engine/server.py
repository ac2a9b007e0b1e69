"""HTTP server for the engine (aiohttp): streamed PCM, whole files, OpenAI shape.

Routes (see docs in the README):
    POST /tts/stream          chunked raw PCM s16le 24 kHz mono, packet by packet
    GET  /tts/requests/{id}   that request's metrics (kept for a while after it ends)
    POST /synthesize          audio/wav
    POST /v1/audio/speech     OpenAI-compatible (wav or pcm, stream=true)
    GET  /v1/speakers, /healthz, /readyz, /metrics
    GET  /openapi.json        the API as OpenAPI 3.1, made from the models that validate it

The engine loads and warms up in a background thread after the socket is
bound: /healthz answers at once, /readyz (and /openapi.json) once warm-up is
done.

A request is validated whole before any status line is sent
(tts_engine/api_models.py, streamtalk_common/http_api.py): a body of at most
MAX_BODY_BYTES (256 KiB), JSON nested at most 32 deep, text of 1 ..
TTS_MAX_TEXT_CHARS (2000) characters whose prompt fits a batch row, no
unpaired surrogates, every number within its range. Errors are JSON bodies
{"error": {"code", "message", "field"?, "valid"?}}, 4xx and 5xx alike, mapped
from the engine's typed errors (tts_engine/errors.py); a request the engine
cannot fit within TTS_QUEUE_TIMEOUT_S gets 503 over_capacity with Retry-After,
before any audio is committed. A reply that fills its row ends there, like one
that reaches TTS_MAX_NEW_TOKENS. A client that disconnects cancels its
generation at the next packet (an INFO line).
"""

from __future__ import annotations

import contextlib
import functools
import hmac
import logging
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import numpy as np
from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from streamtalk_common.audio import SAMPLE_RATE, pcm16_bytes, to_pcm16, wav_bytes, wav_stream_header
from streamtalk_common.http_api import (
    BEARER,
    ApiError,
    Operation,
    json_errors,
    openapi_document,
    read_model,
)

from .api_models import RequestModels, request_models
from .config import EngineConfig
from .errors import EngineStartError, OverCapacity, ReplyTooLong, TTSError
from .heap import freeze_startup_heap
from .runtime import RequestMetrics, StreamHandle, TTSEngine, check_device_memory
from .runtime.memory import PARTS as MEMORY_PARTS
from .synthesis import Request

log = logging.getLogger("tts_engine.server")

ENGINE_KEY = web.AppKey("engine_holder", dict)
MAX_BODY_BYTES = 256 * 1024
METRICS_KEEP = 512  # finished requests whose metrics stay queryable
PUBLIC_PATHS = ("/healthz", "/readyz", "/openapi.json")
ENGINE_GAUGES = (  # TTSEngine.stats() key, metric, help
    ("active", "tts_engine_active_streams", "streams holding a batch row"),
    ("queued", "tts_engine_queued_streams", "streams waiting for a row"),
    ("rejected", "tts_engine_rejected_streams",
     "streams refused with 503 over_capacity since start"),
    ("batch", "tts_engine_batch_size", "streams in the last engine step"),
    ("step_ms", "tts_engine_step_ms",
     "period of the last engine step: its launch until it landed, its frames taken (the wall "
     "time between a stream's frames, admissions and freed rows aside)"),
    ("steps", "tts_engine_steps", "engine steps since start"),
    ("step_rows_sum", "tts_engine_step_rows_sum",
     "streams stepped since start (over tts_engine_steps: the mean batch)"),
    ("step_period_ms_sum", "tts_engine_step_period_ms_sum",
     "the steps' periods (as tts_engine_step_ms) since start"),
    ("step_device_ms_sum", "tts_engine_step_device_ms_sum",
     "the steps' device time since start: codegen + decode (CUDA events; the host clock on a CPU)"),
    ("step_hand_over_ms_sum", "tts_engine_step_hand_over_ms_sum",
     "host time since start sending each step's packets, while the next step runs on the device"),
    ("step_settle_ms_sum", "tts_engine_step_settle_ms_sum",
     "host time since start between steps freeing the rows of cancelled streams and of streams "
     "that ended during a hand-over (not in the step periods)"),
    ("admissions", "tts_engine_admissions", "admissions since start (one prefill each)"),
    ("admitted_sum", "tts_engine_admitted_sum",
     "streams admitted since start (over tts_engine_admissions: the mean group)"),
    ("admission_ms_sum", "tts_engine_admission_ms_sum",
     "time since start the batch waited for admissions (prompts and prefills)"),
    ("admission_prompt_ms_sum", "tts_engine_admission_prompt_ms_sum",
     "of tts_engine_admission_ms_sum, the time building the newcomers' prompts on the host "
     "(those not built ahead)"),
    ("prompts_built_ahead", "tts_engine_prompts_built_ahead",
     "newcomers' prompts built while a step ran on the device, before their admission"),
    ("slow_turns", "tts_engine_slow_turns",
     "worker turns longer than a frame (80 ms) since the engine was ready: each cost every "
     "stream real time; the log says what each spent its time on"),
    ("slow_turn_ms_max", "tts_engine_slow_turn_ms_max",
     "the longest worker turn since the engine was ready"),
    ("gc_pauses", "tts_engine_gc_pauses", "Python garbage collections since the engine was ready"),
    ("gc_full_collections", "tts_engine_gc_full_collections",
     "of tts_engine_gc_pauses, collections of the oldest generation (the long ones)"),
    ("gc_pause_ms_sum", "tts_engine_gc_pause_ms_sum",
     "time since the engine was ready that every Python thread stood still for the garbage "
     "collector"),
    ("gc_pause_ms_max", "tts_engine_gc_pause_ms_max",
     "the longest garbage collection since the engine was ready"),
    ("step_slowdown", "tts_engine_step_slowdown",
     "real step periods over their start-up calibration (median of the recent steps); "
     "tts_engine_step_predicted_ms = calibration x this"),
    ("capacity", "tts_engine_capacity_streams",
     "real-time streams the engine can carry at the measured step times"),
    ("rows", "tts_engine_rows", "batch rows (TTS_MAX_BATCH)"),
    ("underruns", "tts_engine_underruns",
     "packets ready after their playback time (150 ms playout buffer) since start"),
    ("gpu_memory_peak_mib", "tts_engine_gpu_memory_peak_mib",
     "peak GPU memory allocated by torch since start (0 on a CPU)"),
    ("gpu_memory_reserved_mib", "tts_engine_gpu_memory_reserved_mib",
     "GPU memory torch's allocator holds now (0 on a CPU)"),
)
STARTUP_GAUGES = (  # TTSEngine.startup_report() key, metric, help
    ("load_s", "tts_engine_startup_load_seconds",
     "start-up: loading the model and allocating the batch rows"),
    ("compile_s", "tts_engine_startup_compile_seconds",
     "start-up: torch.compile of the decoder layers (TTS_COMPILE=1)"),
    ("warmup_s", "tts_engine_startup_warmup_seconds", "start-up: the warm-up syntheses"),
    ("capture_s", "tts_engine_startup_capture_seconds", "start-up: capturing the CUDA graphs"),
    ("calibrate_s", "tts_engine_startup_calibrate_seconds", "start-up: timing the batch buckets"),
    ("total_s", "tts_engine_startup_total_seconds", "start-up: all phases"),
)


class Stats:
    """Prometheus metrics of this server."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("tts_requests_total", "finished requests", ["route", "outcome"],
                                registry=self.registry)
        self.active = Gauge("tts_active_streams", "streams being generated", registry=self.registry)
        self.ttfa = Histogram("tts_ttfa_seconds", "request accepted -> first PCM packet ready",
                              buckets=(0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 1, 2, 5),
                              registry=self.registry)
        self.rtf = Histogram("tts_rtf", "wall time / audio time per request",
                             buckets=(0.05, 0.1, 0.2, 0.35, 0.5, 0.7, 1, 2, 5),
                             registry=self.registry)
        self.audio = Counter("tts_audio_seconds_total", "audio seconds produced",
                             registry=self.registry)
        self.packets = Counter("tts_packets_total", "PCM packets produced", registry=self.registry)

    def track(self, engine_of: Callable[[], TTSEngine | None]) -> None:
        """Gauges read from the engine at scrape time (0 while it loads)."""
        for key, name, doc in ENGINE_GAUGES:
            gauge = Gauge(name, doc, registry=self.registry)
            gauge.set_function(lambda key=key: (e.stats()[key]
                                                if (e := engine_of()) is not None else 0))
        for part, doc in MEMORY_PARTS.items():
            gauge = Gauge(f"tts_engine_gpu_memory_{part}_mib",
                          f"{doc}, measured at start-up (0 on a CPU)", registry=self.registry)
            gauge.set_function(lambda part=part: (getattr(e.memory, f"{part}_mib")
                                                  if (e := engine_of()) is not None
                                                  and e.memory else 0))
        for key, name, doc in STARTUP_GAUGES:
            gauge = Gauge(name, doc, registry=self.registry)
            gauge.set_function(lambda key=key: (e.startup_report()[key]
                                                if (e := engine_of()) is not None else 0))
        self.registry.register(AdmissionModel(engine_of))

    def observe(self, route: str, m: RequestMetrics) -> None:
        self.requests.labels(route, m.stop_reason or "unknown").inc()
        self.audio.inc(m.audio_s)
        self.packets.inc(m.packets)
        if m.ttfa_ms is not None:
            self.ttfa.observe(m.ttfa_ms / 1000)
        if m.rtf is not None:
            self.rtf.observe(m.rtf)


class AdmissionModel(Collector):
    """Admission control's model at each scrape (runtime/admission.py): every batch bucket's
    predicted step period, and the planned cost of admitting a group per group size seen."""

    def __init__(self, engine_of: Callable[[], TTSEngine | None]) -> None:
        self.engine_of = engine_of

    def collect(self) -> Iterator[GaugeMetricFamily]:
        steps = GaugeMetricFamily(
            "tts_engine_step_predicted_ms", "predicted step period per batch bucket: its "
            "start-up calibration x tts_engine_step_slowdown", labels=["bucket"])
        admissions = GaugeMetricFamily(
            "tts_engine_admission_planned_ms", "what the deadline gate plans an admission of "
            "that many newcomers together to cost (a high quantile of recent ones)",
            labels=["newcomers"])
        if (engine := self.engine_of()) is not None:
            for bucket, ms in engine.admission.predicted_steps().items():
                steps.add_metric([str(bucket)], ms)
            for newcomers, ms in engine.admission.admission_costs().items():
                admissions.add_metric([str(newcomers)], ms)
        yield steps
        yield admissions


class EngineHolder:
    """The engine once loaded, plus what the routes share."""

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.engine: TTSEngine | None = None
        self.load_error: str | None = None
        self.finished: OrderedDict[str, dict] = OrderedDict()
        self.stats = Stats()
        self.stats.track(lambda: self.engine)

    def require(self) -> TTSEngine:
        if self.load_error is not None:
            raise ApiError(503, "load_failed", self.load_error)
        if self.engine is None or not self.engine.ready:
            raise ApiError(503, "not_ready", "the engine is still loading; poll /readyz")
        return self.engine

    @functools.cached_property
    def models(self) -> RequestModels:
        """The request models of the loaded engine (its speakers, languages, text limit)."""
        engine = self.require()
        return request_models(engine.speakers, engine.languages, engine.model.max_text_chars)

    @functools.cached_property
    def openapi(self) -> dict[str, Any]:
        return openapi_spec(self.models, bearer=bool(self.config.api_key))

    def remember(self, m: RequestMetrics) -> None:
        self.finished[m.request_id] = m.to_dict()
        while len(self.finished) > METRICS_KEEP:
            self.finished.popitem(last=False)


def _holder(request: web.Request) -> EngineHolder:
    return request.app[ENGINE_KEY]["holder"]


async def _tts_request(request: web.Request) -> tuple[Request, int | None]:
    """The body of /tts/stream or /synthesize as an engine request, and its packet size."""
    holder = _holder(request)
    engine = holder.require()
    body = await read_model(request, holder.models.tts)
    req = engine.make_request(body.text, body.speaker, body.language, sample=body.sample,
                              seed=body.seed)
    return req, body.packet_tokens


# -- streaming ------------------------------------------------------------


async def _stream_pcm(request: web.Request, route: str, req: Request, packet_tokens: int | None,
                      content_type: str, header: bytes = b"") -> web.StreamResponse:
    holder = _holder(request)
    handle = await _admitted_stream(holder, route, req, packet_tokens)
    resp = web.StreamResponse(headers={
        "Content-Type": content_type, "X-Sample-Rate": str(SAMPLE_RATE), "X-Audio-Format": "s16le",
        "X-Channels": "1", "X-Request-Id": handle.id, "Cache-Control": "no-store",
    })
    resp.enable_chunked_encoding()
    holder.stats.active.inc()
    try:
        async with handle, contextlib.aclosing(_audio(handle)) as audio:  # leaving early cancels
            await resp.prepare(request)
            if header:
                await resp.write(header)
            async for pcm in audio:
                await resp.write(pcm16_bytes(pcm))
            await resp.write_eof()
    # aiohttp's ClientConnectionResetError: a write found the client gone
    except ConnectionResetError:
        log.info("request %s: the client went away; generation cancelled", handle.id)
    except Exception as exc:  # noqa: BLE001 - after the status line an error can only cut the stream short
        # the engine has logged its own failures; anything else is this server's, with its traceback
        log.error("request %s: stream cut short: %s", handle.id, exc,
                  exc_info=not isinstance(exc, TTSError))
        if request.transport is not None:
            request.transport.abort()  # no last chunk: the client sees the stream is incomplete
    finally:
        holder.stats.active.dec()
        await _record_when_done(holder, route, handle)
    return resp


async def _audio(handle: StreamHandle) -> AsyncIterator[np.ndarray]:
    """The stream's packets of PCM. A reply that fills its row ends there, as one that
    reaches TTS_MAX_NEW_TOKENS does: its audio so far is the answer, and its metrics say
    stop_reason row_full."""
    try:
        async for packet in handle:
            yield packet.pcm
    except ReplyTooLong as exc:
        log.warning("request %s: %s", handle.id, exc)


async def _admitted_stream(holder: EngineHolder, route: str, req: Request,
                           packet_tokens: int | None) -> StreamHandle:
    """Open a stream and wait for its row: a refusal becomes an HTTP error before any audio."""
    handle = holder.require().open_stream(req, packet_tokens)
    try:
        await handle.admitted()
    except TTSError:
        await _record_when_done(holder, route, handle)
        raise
    return handle


async def _record_when_done(holder: EngineHolder, route: str, handle: StreamHandle) -> None:
    metrics = await handle.closed()
    holder.remember(metrics)
    holder.stats.observe(route, metrics)


async def _whole_pcm(request: web.Request, route: str, req: Request,
                     packet_tokens: int | None) -> tuple[np.ndarray, str]:
    """The whole reply and its request id; a client that goes away meanwhile cancels it."""
    holder = _holder(request)
    handle = await _admitted_stream(holder, route, req, packet_tokens)
    parts = []
    try:
        async with handle, contextlib.aclosing(_audio(handle)) as audio:  # leaving early cancels
            async for pcm in audio:
                if request.transport is None or request.transport.is_closing():
                    log.info("request %s: the client went away; generation cancelled", handle.id)
                    break
                parts.append(pcm)
    finally:
        await _record_when_done(holder, route, handle)
    return (np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)), handle.id


def _wav_response(pcm: np.ndarray, request_id: str) -> web.Response:
    return web.Response(body=wav_bytes(to_pcm16(pcm), SAMPLE_RATE), content_type="audio/wav",
                        headers={"X-Request-Id": request_id})


# -- routes ---------------------------------------------------------------


async def tts_stream(request: web.Request) -> web.StreamResponse:
    req, packet_tokens = await _tts_request(request)
    return await _stream_pcm(request, "tts_stream", req, packet_tokens, "application/octet-stream")


async def synthesize(request: web.Request) -> web.Response:
    req, packet_tokens = await _tts_request(request)
    return _wav_response(*await _whole_pcm(request, "synthesize", req, packet_tokens))


async def openai_speech(request: web.Request) -> web.StreamResponse:
    holder = _holder(request)
    engine = holder.require()
    body = await read_model(request, holder.models.speech)
    req = engine.make_request(body.input, body.voice, body.language, sample=body.sample,
                              seed=body.seed)
    wav = body.response_format == "wav"
    if body.stream:
        return await _stream_pcm(request, "openai_speech", req, None,
                                 "audio/wav" if wav else "application/octet-stream",
                                 wav_stream_header(SAMPLE_RATE) if wav else b"")
    pcm, request_id = await _whole_pcm(request, "openai_speech", req, None)
    if wav:
        return _wav_response(pcm, request_id)
    return web.Response(body=pcm16_bytes(pcm), content_type="application/octet-stream",
                        headers={"X-Sample-Rate": str(SAMPLE_RATE), "X-Request-Id": request_id})


async def request_metrics(request: web.Request) -> web.Response:
    holder = _holder(request)
    rid = request.match_info["request_id"]
    if rid not in holder.finished:
        raise ApiError(404, "unknown_request",
                       f"no finished request {rid!r} "
                       f"(metrics are kept for the last {METRICS_KEEP} requests)")
    return web.json_response(holder.finished[rid])


async def speakers(request: web.Request) -> web.Response:
    engine = _holder(request).require()
    return web.json_response({"speakers": engine.speakers, "languages": engine.languages})


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    engine = _holder(request).require()
    return web.json_response({"ready": True, "load_s": round(engine.load_s, 2),
                              "warmup_s": round(engine.warmup_s, 2),
                              "device": str(engine.config.torch_device),
                              "model_dir": str(engine.model.model_dir), "rows": engine.pool.rows,
                              "capacity": engine.capacity, "capacity_left": engine.capacity_left,
                              "memory": engine.memory.to_dict(),
                              "startup": engine.startup_report()})


async def metrics(request: web.Request) -> web.Response:
    holder = _holder(request)
    data = generate_latest(holder.stats.registry)
    return web.Response(body=data, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(_holder(request).openapi)


# -- the published API ------------------------------------------------------


def openapi_spec(models: RequestModels, bearer: bool) -> dict[str, Any]:
    """The OpenAPI 3.1 document of this server, its request schemas those of `models`."""
    unauthorized = "missing or wrong bearer key (only with TTS_API_KEY set)"
    unavailable = "the engine is not ready, over capacity (with Retry-After) or out of GPU memory"
    guarded = {401: unauthorized}
    engine = {401: unauthorized, 503: unavailable}
    body = {400: "the body is not a valid request (what is wrong and what is valid)",
            401: unauthorized, 413: f"the body is larger than {MAX_BODY_BYTES} bytes",
            415: "the body is not application/json", 503: unavailable}
    operations = [
        Operation("POST", "/tts/stream",
                  "Speak text as a chunked stream of raw PCM (s16le, 24 kHz, mono)", models.tts,
                  {200: "PCM, packet by packet", **body}, {200: "application/octet-stream"}),
        Operation("GET", "/tts/requests/{request_id}", "A finished request's metrics",
                  None, {200: "TTFA, RTF, frames, packets, timings, stop reason", **guarded,
                         404: f"no such request among the last {METRICS_KEEP}"}),
        Operation("POST", "/synthesize",
                  "Speak text as one WAV file (the samples the stream sends)", models.tts,
                  {200: "16-bit mono WAV, 24 kHz", **body}, {200: "audio/wav"}),
        Operation("POST", "/v1/audio/speech",
                  "OpenAI's speech endpoint: WAV or raw PCM, whole or streamed", models.speech,
                  {200: "WAV (response_format wav) or raw PCM s16le (pcm)", **body},
                  {200: "audio/wav"}),
        Operation("GET", "/v1/speakers", "The speakers and languages", None,
                  {200: "the names", **engine}),
        Operation("GET", "/healthz", "Liveness"),
        Operation("GET", "/readyz", "Readiness: the engine has loaded and warmed up",
                  None, {200: "ready, with the engine's rows, capacity and start-up GPU memory",
                         503: "still loading, or failed to load"}),
        Operation("GET", "/metrics", "Prometheus metrics", None, {200: "the metrics", **guarded},
                  {200: "text/plain"}),
        Operation("GET", "/openapi.json", "This document", None,
                  {200: "OpenAPI 3.1", 503: "the engine is not ready (the schemas come from it)"}),
    ]
    doc = openapi_document("streamtalk TTS server", "1", operations,
                           security=BEARER if bearer else None, open_paths=PUBLIC_PATHS)
    # what an Operation cannot say: the path parameter, the second audio type, and the
    # errors any path can give
    doc["paths"]["/tts/requests/{request_id}"]["get"]["parameters"] = [
        {"name": "request_id", "in": "path", "required": True,
         "schema": {"type": "string", "pattern": "^[0-9a-f]{16}$"}}]
    doc["paths"]["/v1/audio/speech"]["post"]["responses"]["200"]["content"][
        "application/octet-stream"] = {}
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    doc["components"]["responses"] = {
        "NotFound": {"description": "404: no such route", "content": error},
        "MethodNotAllowed": {"description": "405: the method is not allowed on the path "
                                            "(see Allow)", "content": error},
    }
    return doc


# -- middleware -------------------------------------------------------------


@web.middleware
async def bearer_key(request: web.Request, handler):
    key = _holder(request).config.api_key
    if key and request.path not in PUBLIC_PATHS:
        given = request.headers.get("Authorization", "").encode("utf-8", "surrogateescape")
        if not hmac.compare_digest(given, f"Bearer {key}".encode()):
            raise ApiError(401, "unauthorized",
                           "missing or wrong bearer key (Authorization: Bearer <TTS_API_KEY>)",
                           headers={"WWW-Authenticate": "Bearer"})
    return await handler(request)


@web.middleware
async def engine_errors(request: web.Request, handler):
    """The engine's typed errors as HTTP errors (tts_engine/errors.py)."""
    try:
        return await handler(request)
    except TTSError as exc:
        headers = {"Retry-After": str(exc.retry_after_s)} if isinstance(exc, OverCapacity) else None
        raise ApiError(exc.status, exc.code, str(exc), valid=exc.valid, headers=headers) from None


def create_app(config: EngineConfig, engine: TTSEngine | None = None) -> web.Application:
    app = web.Application(middlewares=[json_errors(log), bearer_key, engine_errors],
                          client_max_size=MAX_BODY_BYTES)
    holder = EngineHolder(config)
    holder.engine = engine
    app[ENGINE_KEY] = {"holder": holder}
    app.add_routes([
        web.post("/tts/stream", tts_stream),
        web.get("/tts/requests/{request_id}", request_metrics),
        web.post("/synthesize", synthesize),
        web.post("/v1/audio/speech", openai_speech),
        web.get("/v1/speakers", speakers),
        web.get("/healthz", healthz),
        web.get("/readyz", readyz),
        web.get("/metrics", metrics),
        web.get("/openapi.json", openapi),
    ])
    return app


def load_engine_in_background(app: web.Application) -> threading.Thread:
    holder: EngineHolder = app[ENGINE_KEY]["holder"]

    def load() -> None:
        try:
            holder.engine = TTSEngine(holder.config)
            freeze_startup_heap()
            log.info("start-up complete: serving %s on %s", holder.config.resolved_model_dir,
                     holder.config.torch_device)
        except Exception as exc:  # noqa: BLE001 - reported on /readyz and in the log
            holder.load_error = f"engine failed to load: {type(exc).__name__}: {exc}"
            log.error(holder.load_error)

    thread = threading.Thread(target=load, name="engine-loader", daemon=True)
    thread.start()
    return thread


def bind_socket(host: str, port: int) -> socket.socket:
    """Bind first, so a taken port is a clear error before anything loads."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise EngineStartError(
            f"cannot listen on {host}:{port}: {exc.strerror}. "
            "Another server (an earlier TTS server?) may still be running: "
            "`scripts/start_all.sh stop`, or choose another TTS_PORT."
        ) from None
    sock.listen(128)
    return sock


def serve(config: EngineConfig) -> None:
    sock = bind_socket(config.host, config.port)
    check_device_memory(config.torch_device, config.min_free_gpu_mib)
    app = create_app(config)
    load_engine_in_background(app)
    log.info("listening on http://%s:%d (engine loading from %s)", config.host, config.port,
             config.resolved_model_dir)
    started = time.monotonic()
    try:
        web.run_app(app, sock=sock, print=None, handle_signals=True)
    finally:
        holder: EngineHolder = app[ENGINE_KEY]["holder"]
        if holder.engine is not None:
            holder.engine.close()
        log.info("server stopped after %.0f s", time.monotonic() - started)
