"""aiohttp application: /v1/models, /v1/chat/completions, /v1/audio/transcriptions."""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from .asr import AudioDecodeError, Transcriber
from .config import OmniDevConfig
from .protocol import ChatRequest, OpenAIError, invalid, parse_chat_request
from .responder import ScriptedResponder, paced, split_tokens

log = logging.getLogger("omni_dev")

MAX_BODY_BYTES = 32 * 1024 * 1024  # base64 audio of a few minutes
_TRANSCRIBE_INSTRUCTION = re.compile(r"\btranscri(be|bing|ption|pt)\b", re.IGNORECASE)
TRANSCRIPTION_FORMATS = ("json", "text", "verbose_json")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Services:
    config: OmniDevConfig
    transcriber: Transcriber
    responder: ScriptedResponder
    started: int


SERVICES_KEY = web.AppKey("services", Services)


@web.middleware
async def openai_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except OpenAIError as exc:
        return web.json_response(exc.to_json(), status=exc.status)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        message = {
            404: f"no such route: {request.method} {request.path}",
            405: f"{request.method} is not allowed on {request.path}",
            413: f"request body larger than {MAX_BODY_BYTES} bytes",
        }.get(exc.status, exc.reason)
        code = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}.get(
            exc.status, "http_error"
        )
        err = OpenAIError(exc.status, message, type="invalid_request_error", code=code)
        return web.json_response(err.to_json(), status=exc.status)
    except Exception:
        log.exception("internal error on %s", request.path)
        err = OpenAIError(500, "internal server error", type="server_error", code="internal_error")
        return web.json_response(err.to_json(), status=500)


def _check_auth(request: web.Request) -> None:
    key = request.app[SERVICES_KEY].config.api_key
    if key is None:
        return
    if request.headers.get("Authorization", "") != f"Bearer {key}":
        raise OpenAIError(
            401, "invalid API key", type="authentication_error", code="invalid_api_key"
        )


async def _read_json(request: web.Request) -> object:
    raw = await request.read()
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise invalid(f"the request body is not valid JSON: {exc}", code="invalid_json") from None


def _model_card(services: Services) -> dict[str, Any]:
    return {
        "id": services.config.model,
        "object": "model",
        "created": services.started,
        "owned_by": "streamtalk",
        "max_model_len": 2048,
    }


async def list_models(request: web.Request) -> web.Response:
    _check_auth(request)
    services = request.app[SERVICES_KEY]
    return web.json_response({"object": "list", "data": [_model_card(services)]})


async def get_model(request: web.Request) -> web.Response:
    _check_auth(request)
    services = request.app[SERVICES_KEY]
    if request.match_info["model"] != services.config.model:
        raise OpenAIError(
            404,
            f"The model `{request.match_info['model']}` does not exist.",
            type="NotFoundError",
            param="model",
            code="model_not_found",
        )
    return web.json_response(_model_card(services))


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _heard_and_reply(services: Services, req: ChatRequest) -> tuple[str, str]:
    """What the user said (transcripts, else text) and the scripted answer to it."""
    transcripts = []
    for i, audio in enumerate(req.turn.audios):
        try:
            transcripts.append((await services.transcriber.atranscribe(audio)).text)
        except AudioDecodeError as exc:
            raise invalid(f"audio part {i} of the last user message: {exc}", "messages") from None
    if req.turn.audios:
        heard = " ".join(t for t in transcripts if t)
        # Text beside audio is an instruction; "transcribe ..." asks for the words only.
        instructions = req.system_texts + req.turn.texts
        if any(_TRANSCRIBE_INSTRUCTION.search(t) for t in instructions):
            return heard, heard
    else:
        heard = " ".join(t.strip() for t in req.turn.texts if t.strip())
    return heard, services.responder.reply(heard)


def _usage(req: ChatRequest, completion_tokens: int) -> dict[str, int]:
    prompt = max(1, req.prompt_words)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt + completion_tokens,
    }


async def chat_completions(request: web.Request) -> web.StreamResponse:
    _check_auth(request)
    services = request.app[SERVICES_KEY]
    cfg = services.config
    t0 = time.monotonic()
    req = parse_chat_request(await _read_json(request), cfg.model)
    heard, reply = await _heard_and_reply(services, req)
    tokens = split_tokens(reply)
    finish_reason = "stop"
    if req.max_tokens is not None and len(tokens) > req.max_tokens:
        tokens, finish_reason = tokens[: req.max_tokens], "length"
    log.info(
        "chat stream=%s audio=%d heard=%r reply=%r (asr %.0f ms)",
        req.stream,
        len(req.turn.audios),
        heard,
        "".join(tokens),
        (time.monotonic() - t0) * 1000,
    )
    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
    created = int(time.time())

    if not req.stream:
        content = "".join(
            [t async for t in paced(tokens, cfg.first_token_delay_s, cfg.tokens_per_s)]
        )
        return web.json_response(
            {
                "id": completion_id,
                "object": "chat.completion",
                "created": created,
                "model": cfg.model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content},
                        "finish_reason": finish_reason,
                    }
                ],
                "usage": _usage(req, len(tokens)),
            }
        )

    resp = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await resp.prepare(request)

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
        body = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": cfg.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            **extra,
        }
        return b"data: " + json.dumps(body).encode() + b"\n\n"

    try:
        await resp.write(chunk({"role": "assistant", "content": ""}))
        async for token in paced(tokens, cfg.first_token_delay_s, cfg.tokens_per_s):
            await resp.write(chunk({"content": token}))
        await resp.write(chunk({}, finish_reason))
        if req.include_usage:
            usage_chunk = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": cfg.model,
                "choices": [],
                "usage": _usage(req, len(tokens)),
            }
            await resp.write(b"data: " + json.dumps(usage_chunk).encode() + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
    except (ConnectionResetError, ConnectionError):
        log.info("client went away mid-stream (%s)", completion_id)
    return resp


async def transcriptions(request: web.Request) -> web.Response:
    _check_auth(request)
    services = request.app[SERVICES_KEY]
    if not request.content_type.startswith("multipart/"):
        raise invalid(
            "send multipart/form-data with a 'file' field and a 'model' field",
            "file",
            "invalid_content_type",
        )
    form = await request.post()
    upload = form.get("file")
    if upload is None or not hasattr(upload, "file"):
        raise invalid(
            "'file' (an audio file upload) is required", "file", "missing_required_parameter"
        )
    model = form.get("model")
    if not isinstance(model, str) or not model:
        raise invalid("'model' is required", "model", "missing_required_parameter")
    if model != services.config.model:
        raise OpenAIError(
            404,
            f"The model `{model}` does not exist. This server serves `{services.config.model}`.",
            type="NotFoundError",
            param="model",
            code="model_not_found",
        )
    fmt = form.get("response_format", "json")
    if fmt not in TRANSCRIPTION_FORMATS:
        raise invalid(
            f"'response_format' must be one of {', '.join(TRANSCRIPTION_FORMATS)}; got {fmt!r}",
            "response_format",
        )
    language = form.get("language")
    if language not in (None, "", "en"):
        raise invalid(
            f"this backend recognises English only ('en'); got language {language!r}", "language"
        )
    prompt = form.get("prompt")
    data = upload.file.read()  # type: ignore[union-attr]
    try:
        result = await services.transcriber.atranscribe(
            data, prompt if isinstance(prompt, str) else None
        )
    except AudioDecodeError as exc:
        raise invalid(str(exc), "file", "invalid_audio") from None
    log.info("transcription %r (%.2f s of audio)", result.text, result.duration_s)
    if fmt == "text":
        return web.Response(text=result.text + "\n")
    if fmt == "verbose_json":
        return web.json_response(
            {
                "task": "transcribe",
                "language": "english",
                "duration": round(result.duration_s, 3),
                "text": result.text,
                "segments": [
                    {"id": i, "start": round(s, 3), "end": round(e, 3), "text": t}
                    for i, (s, e, t) in enumerate(result.segments)
                ],
            }
        )
    return web.json_response({"text": result.text})


def create_app(
    config: OmniDevConfig, transcriber: Transcriber, responder: ScriptedResponder
) -> web.Application:
    app = web.Application(middlewares=[openai_errors], client_max_size=MAX_BODY_BYTES)
    app[SERVICES_KEY] = Services(config, transcriber, responder, int(time.time()))
    app.router.add_get("/health", health)
    app.router.add_get("/healthz", health)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/v1/models/{model}", get_model)
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/v1/audio/transcriptions", transcriptions)

    async def _close(app: web.Application) -> None:
        app[SERVICES_KEY].transcriber.close()

    app.on_cleanup.append(_close)
    return app
