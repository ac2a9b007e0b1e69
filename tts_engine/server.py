"""HTTP server for the engine (aiohttp): streamed PCM, whole files, OpenAI shape.

Routes (see docs in the README):
    POST /tts/stream          chunked raw PCM s16le 24 kHz mono, packet by packet
    GET  /tts/requests/{id}   that request's metrics (kept for a while after it ends)
    POST /synthesize          audio/wav
    POST /v1/audio/speech     OpenAI-compatible (wav or pcm, stream=true)
    GET  /v1/speakers, /healthz, /readyz, /metrics

The engine loads and warms up in a background thread after the socket is
bound: /healthz answers at once, /readyz only once warm-up is done. Errors
are JSON bodies {"error": {"code", "message", "valid"?}}, mapped from the
engine's typed errors (tts_engine/errors.py); a request the engine cannot fit
within TTS_QUEUE_TIMEOUT_S gets 503 over_capacity with Retry-After, before any
audio is committed. A client that disconnects cancels its generation at the
next frame.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
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

from .config import EngineConfig
from .errors import EngineStartError, OverCapacity, TTSError
from .heap import freeze_startup_heap
from .runtime import RequestMetrics, StreamHandle, TTSEngine, check_device_memory
from .synthesis import SAMPLE_RATE, pcm16_bytes, write_wav

log = logging.getLogger("tts_engine.server")

ENGINE_KEY = web.AppKey("engine_holder", dict)
MAX_BODY_BYTES = 256 * 1024
METRICS_KEEP = 512  # finished requests whose metrics stay queryable
PUBLIC_PATHS = ("/healthz", "/readyz")
ENGINE_GAUGES = (  # TTSEngine.stats() key, metric, help
    ("active", "tts_engine_active_streams", "streams holding a batch row"),
    ("queued", "tts_engine_queued_streams", "streams waiting for a row"),
    ("rejected", "tts_engine_rejected_streams", "streams refused with 503 over_capacity since start"),
    ("batch", "tts_engine_batch_size", "streams in the last engine step"),
    ("step_ms", "tts_engine_step_ms", "wall time of the last engine step (one frame for every stream)"),
    ("capacity", "tts_engine_capacity_streams", "real-time streams the engine can carry at the measured step times"),
    ("rows", "tts_engine_rows", "batch rows (TTS_MAX_BATCH)"),
    ("underruns", "tts_engine_underruns", "packets ready after their playback time (150 ms playout buffer) since start"),
    ("gpu_memory_peak_mib", "tts_engine_gpu_memory_peak_mib", "peak GPU memory allocated by torch since start (0 on a CPU)"),
)


class ApiError(web.HTTPException):
    def __init__(self, status: int, code: str, message: str, valid: list | None = None,
                 headers: dict[str, str] | None = None) -> None:
        self.status_code = status
        body: dict[str, Any] = {"code": code, "message": message}
        if valid is not None:
            body["valid"] = valid
        super().__init__(text=_json_text({"error": body}), content_type="application/json", headers=headers)

    @classmethod
    def of(cls, error: TTSError) -> ApiError:
        headers = {"Retry-After": str(error.retry_after_s)} if isinstance(error, OverCapacity) else None
        return cls(error.status, error.code, str(error), error.valid, headers)


def _json_text(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False)


class Stats:
    """Prometheus metrics of this server."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("tts_requests_total", "finished requests", ["route", "outcome"], registry=self.registry)
        self.active = Gauge("tts_active_streams", "streams being generated", registry=self.registry)
        self.ttfa = Histogram("tts_ttfa_seconds", "request accepted -> first PCM packet ready",
                              buckets=(0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 1, 2, 5), registry=self.registry)
        self.rtf = Histogram("tts_rtf", "wall time / audio time per request",
                             buckets=(0.05, 0.1, 0.2, 0.35, 0.5, 0.7, 1, 2, 5), registry=self.registry)
        self.audio = Counter("tts_audio_seconds_total", "audio seconds produced", registry=self.registry)
        self.packets = Counter("tts_packets_total", "PCM packets produced", registry=self.registry)

    def track(self, engine_of: Callable[[], TTSEngine | None]) -> None:
        """Gauges read from the engine at scrape time (0 while it loads)."""
        for key, name, doc in ENGINE_GAUGES:
            gauge = Gauge(name, doc, registry=self.registry)
            gauge.set_function(lambda key=key: (e.stats()[key] if (e := engine_of()) is not None else 0))

    def observe(self, route: str, m: RequestMetrics) -> None:
        self.requests.labels(route, m.stop_reason or "unknown").inc()
        self.audio.inc(m.audio_s)
        self.packets.inc(m.packets)
        if m.ttfa_ms is not None:
            self.ttfa.observe(m.ttfa_ms / 1000)
        if m.rtf is not None:
            self.rtf.observe(m.rtf)


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
        if self.engine is None or not self.engine.ready:
            raise ApiError(503, "not_ready", self.load_error or "the engine is still loading; poll /readyz")
        return self.engine

    def remember(self, m: RequestMetrics) -> None:
        self.finished[m.request_id] = m.to_dict()
        while len(self.finished) > METRICS_KEEP:
            self.finished.popitem(last=False)


def _holder(request: web.Request) -> EngineHolder:
    return request.app[ENGINE_KEY]["holder"]


# -- request parsing ------------------------------------------------------


async def _json_body(request: web.Request) -> dict:
    if request.content_type != "application/json":
        raise ApiError(415, "unsupported_media_type",
                       f"Content-Type must be application/json, got {request.content_type or 'none'!r}")
    try:
        body = await request.json()
    except ValueError as exc:
        raise ApiError(400, "invalid_json", f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_json", "request body must be a JSON object")
    return body


def _field(body: dict, name: str, kind: type | tuple, required: bool = False, default: Any = None) -> Any:
    if name not in body or body[name] is None:
        if required:
            raise ApiError(400, "missing_field", f"field {name!r} is required")
        return default
    value = body[name]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
        names = " or ".join(k.__name__ for k in kinds)
        raise ApiError(400, "invalid_field", f"field {name!r} must be {names}, got {type(value).__name__}")
    return value


def _parse_tts_body(engine: TTSEngine, body: dict):
    text = _field(body, "text", str, required=True)
    speaker = _field(body, "speaker", str, required=True)
    language = _field(body, "language", str, default="auto")
    packet_tokens = _field(body, "packet_tokens", int)
    if packet_tokens is not None and not 1 <= packet_tokens <= 64:
        raise ApiError(400, "invalid_field", f"packet_tokens must be 1..64, got {packet_tokens}")
    seed = _field(body, "seed", int)
    sample = _field(body, "sample", bool)
    return engine.make_request(text, speaker, language, sample=sample, seed=seed), packet_tokens


# -- streaming ------------------------------------------------------------


async def _stream_pcm(request: web.Request, route: str, req, packet_tokens: int | None,
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
        await resp.prepare(request)
        if header:
            await resp.write(header)
        async for packet in handle:
            await resp.write(pcm16_bytes(packet.pcm))
        await resp.write_eof()
    except (ConnectionResetError, asyncio.CancelledError):
        log.info("request %s: client went away, generation cancelled", handle.id)
        handle.cancel()
        raise
    finally:
        holder.stats.active.dec()
        handle.cancel()  # no-op once the stream has ended
        await _record_when_done(holder, route, handle)
    return resp


async def _admitted_stream(holder: EngineHolder, route: str, req, packet_tokens: int | None) -> StreamHandle:
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


def _wav_stream_header() -> bytes:
    """A WAV header for a stream of unknown length (sizes at their maximum)."""
    buf = io.BytesIO()
    byte_rate = SAMPLE_RATE * 2
    buf.write(b"RIFF" + (0xFFFFFFFF).to_bytes(4, "little") + b"WAVEfmt ")
    buf.write((16).to_bytes(4, "little") + (1).to_bytes(2, "little") + (1).to_bytes(2, "little"))
    buf.write(SAMPLE_RATE.to_bytes(4, "little") + byte_rate.to_bytes(4, "little"))
    buf.write((2).to_bytes(2, "little") + (16).to_bytes(2, "little"))
    buf.write(b"data" + (0xFFFFFFFF).to_bytes(4, "little"))
    return buf.getvalue()


async def _whole_wav(holder: EngineHolder, route: str, req, packet_tokens: int | None) -> web.Response:
    handle = await _admitted_stream(holder, route, req, packet_tokens)
    try:
        parts = [p.pcm async for p in handle]
    finally:
        handle.cancel()  # no-op once the stream has ended
        await _record_when_done(holder, route, handle)
    buf = io.BytesIO()
    write_wav(buf, np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32))
    return web.Response(body=buf.getvalue(), content_type="audio/wav", headers={"X-Request-Id": handle.id})


# -- routes ---------------------------------------------------------------


async def tts_stream(request: web.Request) -> web.StreamResponse:
    engine = _holder(request).require()
    req, packet_tokens = _parse_tts_body(engine, await _json_body(request))
    return await _stream_pcm(request, "tts_stream", req, packet_tokens, "application/octet-stream")


async def synthesize(request: web.Request) -> web.Response:
    holder = _holder(request)
    req, packet_tokens = _parse_tts_body(holder.require(), await _json_body(request))
    return await _whole_wav(holder, "synthesize", req, packet_tokens)


OPENAI_FORMATS = ("wav", "pcm")


async def openai_speech(request: web.Request) -> web.StreamResponse:
    holder = _holder(request)
    engine = holder.require()
    body = await _json_body(request)
    text = _field(body, "input", str, required=True)
    voice = _field(body, "voice", str, required=True)
    fmt = _field(body, "response_format", str, default="wav")
    if fmt not in OPENAI_FORMATS:
        raise ApiError(400, "unsupported_response_format", f"response_format {fmt!r} is not supported",
                       list(OPENAI_FORMATS))
    speed = _field(body, "speed", (int, float), default=1.0)
    if speed != 1.0:
        raise ApiError(400, "invalid_field", "speed must be 1.0 (the model speaks at its own pace)")
    stream = _field(body, "stream", bool, default=False)
    req = engine.make_request(text, voice, _field(body, "language", str, default="auto"),
                              sample=_field(body, "sample", bool), seed=_field(body, "seed", int))
    if stream:
        header = _wav_stream_header() if fmt == "wav" else b""
        content_type = "audio/wav" if fmt == "wav" else "application/octet-stream"
        return await _stream_pcm(request, "openai_speech", req, None, content_type, header)
    if fmt == "wav":
        return await _whole_wav(holder, "openai_speech", req, None)
    pcm, metrics = await engine.synthesize_pcm(req)
    holder.remember(metrics)
    holder.stats.observe("openai_speech", metrics)
    return web.Response(body=pcm16_bytes(pcm), content_type="application/octet-stream",
                        headers={"X-Sample-Rate": str(SAMPLE_RATE), "X-Request-Id": metrics.request_id})


async def request_metrics(request: web.Request) -> web.Response:
    holder = _holder(request)
    rid = request.match_info["request_id"]
    if rid not in holder.finished:
        raise ApiError(404, "unknown_request",
                       f"no finished request {rid!r} (metrics are kept for the last {METRICS_KEEP} requests)")
    return web.json_response(holder.finished[rid])


async def speakers(request: web.Request) -> web.Response:
    engine = _holder(request).require()
    return web.json_response({"speakers": engine.speakers, "languages": engine.languages})


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    holder = _holder(request)
    engine = holder.engine
    if engine is not None and engine.ready:
        return web.json_response({"ready": True, "load_s": round(engine.load_s, 2), "warmup_s": round(engine.warmup_s, 2),
                                  "device": str(engine.config.torch_device), "model_dir": str(engine.model.model_dir),
                                  "rows": engine.pool.rows, "capacity": engine.capacity,
                                  "capacity_left": engine.capacity_left})
    body = {"ready": False, "error": holder.load_error} if holder.load_error else {"ready": False}
    return web.json_response(body, status=503)


async def metrics(request: web.Request) -> web.Response:
    holder = _holder(request)
    data = generate_latest(holder.stats.registry)
    return web.Response(body=data, headers={"Content-Type": CONTENT_TYPE_LATEST})


@web.middleware
async def errors_and_auth(request: web.Request, handler):
    key = _holder(request).config.api_key
    if key and request.path not in PUBLIC_PATHS:
        if request.headers.get("Authorization", "") != f"Bearer {key}":
            raise ApiError(401, "unauthorized", "missing or wrong bearer key (Authorization: Bearer <TTS_API_KEY>)")
    try:
        return await handler(request)
    except TTSError as exc:
        raise ApiError.of(exc) from None
    except web.HTTPNotFound:
        raise ApiError(404, "not_found", f"no route {request.method} {request.path}") from None
    except web.HTTPMethodNotAllowed as exc:
        raise ApiError(405, "method_not_allowed", f"{request.method} is not allowed on {request.path}",
                       sorted(exc.allowed_methods)) from None
    except web.HTTPRequestEntityTooLarge:
        raise ApiError(413, "too_large", f"request body is larger than {MAX_BODY_BYTES} bytes") from None


def create_app(config: EngineConfig, engine: TTSEngine | None = None) -> web.Application:
    app = web.Application(middlewares=[errors_and_auth], client_max_size=MAX_BODY_BYTES)
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
            f"cannot listen on {host}:{port}: {exc.strerror}. Another server (an earlier TTS server?) "
            "may still be running: `scripts/start_all.sh stop`, or choose another TTS_PORT."
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
