"""aiohttp application: /v1/models, /v1/chat/completions, /v1/audio/transcriptions.

Requests follow the shared JSON conventions (streamtalk_common.http_api): the whole request
is validated, its audio decoded and transcribed, before a status line goes out (streamed
completions too); every error is JSON carrying OpenAI's error `type`; a client that goes
away mid-stream is an INFO line.

Bounds: a body of at most MAX_BODY_BYTES (this also bounds an audio upload), JSON nested at
most MAX_JSON_DEPTH deep, at most MAX_AUDIO_S of audio per request (all its clips together;
413 beyond), and at most MAX_ASR_REQUESTS requests holding audio for speech recognition at
once (503 over_capacity with Retry-After beyond).
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from streamtalk_common.http_api import ApiError, Handler, json_errors, read_model, validate_json

from .asr import AudioDecodeError, AudioTooLongError, Transcriber, Transcript
from .config import OmniDevConfig
from .openapi import OPEN_PATHS, openapi_spec
from .protocol import MAX_AUDIO_S, MAX_BODY_BYTES, ChatCompletionRequest, TranscriptionForm
from .responder import ScriptedResponder, paced, split_tokens

log = logging.getLogger("omni_dev")

MAX_ASR_REQUESTS = 8
ASR_RETRY_AFTER_S = 1
_TRANSCRIBE_INSTRUCTION = re.compile(r"\btranscri(be|bing|ption|pt)\b", re.IGNORECASE)


@dataclass
class Services:
    config: OmniDevConfig
    transcriber: Transcriber
    responder: ScriptedResponder
    started: int
    asr_requests: int = 0  # requests holding audio for recognition now


SERVICES_KEY = web.AppKey("services", Services)
OPENAPI_KEY = web.AppKey("openapi", dict)


def openai_error_type(status: int) -> str:
    if status == 401:
        return "authentication_error"
    if status >= 500:
        return "server_error"
    return "invalid_request_error"


@web.middleware
async def bearer_key(request: web.Request, handler: Handler) -> web.StreamResponse:
    key = request.app[SERVICES_KEY].config.api_key
    if key is not None and request.path not in OPEN_PATHS:
        given = request.headers.get("Authorization", "").encode("utf-8", "surrogateescape")
        if not hmac.compare_digest(given, f"Bearer {key}".encode()):
            raise ApiError(401, "invalid_api_key",
                           "send the API key as 'Authorization: Bearer <key>'")
    return await handler(request)


def _unknown_model(name: str, served: str) -> ApiError:
    return ApiError(404, "model_not_found",
                    f"The model `{name}` does not exist. This server serves `{served}`.",
                    field="model", valid=[served])


def _model_card(services: Services) -> dict[str, Any]:
    return {
        "id": services.config.model,
        "object": "model",
        "created": services.started,
        "owned_by": "streamtalk",
        "max_model_len": 2048,
    }


async def list_models(request: web.Request) -> web.Response:
    services = request.app[SERVICES_KEY]
    return web.json_response({"object": "list", "data": [_model_card(services)]})


async def get_model(request: web.Request) -> web.Response:
    services = request.app[SERVICES_KEY]
    if request.match_info["model"] != services.config.model:
        raise _unknown_model(request.match_info["model"], services.config.model)
    return web.json_response(_model_card(services))


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(request.app[OPENAPI_KEY])


@contextlib.contextmanager
def _asr_slot(services: Services) -> Iterator[None]:
    if services.asr_requests >= MAX_ASR_REQUESTS:
        raise ApiError(503, "over_capacity",
                       f"{MAX_ASR_REQUESTS} requests are already waiting for speech recognition",
                       headers={"Retry-After": str(ASR_RETRY_AFTER_S)})
    services.asr_requests += 1
    try:
        yield
    finally:
        services.asr_requests -= 1


async def _transcribe(services: Services, clip: bytes, field: str, max_s: float,
                      prompt: str | None = None) -> Transcript:
    try:
        return await services.transcriber.atranscribe(clip, max_s, prompt)
    except AudioDecodeError as exc:
        raise ApiError(400, "invalid_audio", str(exc), field=field) from None
    except AudioTooLongError:
        raise ApiError(413, "audio_too_long",
                       f"a request may carry at most {MAX_AUDIO_S:g} s of audio",
                       field=field) from None


async def _heard_and_reply(services: Services, req: ChatCompletionRequest) -> tuple[str, str]:
    """What the user said (transcripts, else text) and the scripted answer to it."""
    i, turn = req.last_user_message()
    earlier = [text for m in req.messages[:i]
               if m.role == "user" and (text := " ".join(m.texts()).strip())]
    clips = [(f"messages.{i}.content.parts.{j}", audio) for j, part in enumerate(turn.parts())
             if (audio := part.audio()) is not None]
    if not clips:
        heard = " ".join(t.strip() for t in turn.texts() if t.strip())
        return heard, services.responder.reply(heard, earlier)
    transcripts = []
    budget_s = MAX_AUDIO_S
    with _asr_slot(services):
        for field, clip in clips:
            transcript = await _transcribe(services, clip, field, budget_s)
            budget_s -= transcript.duration_s
            transcripts.append(transcript.text)
    heard = " ".join(t for t in transcripts if t)
    # Text beside audio is an instruction; "transcribe ..." asks for the words only.
    if any(_TRANSCRIBE_INSTRUCTION.search(t) for t in req.system_texts() + turn.texts()):
        return heard, heard
    return heard, services.responder.reply(heard, earlier)


def _usage(req: ChatCompletionRequest, completion_tokens: int) -> dict[str, int]:
    prompt = max(1, req.prompt_words())
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt + completion_tokens,
    }


async def chat_completions(request: web.Request) -> web.StreamResponse:
    services = request.app[SERVICES_KEY]
    cfg = services.config
    t0 = time.monotonic()
    req = await read_model(request, ChatCompletionRequest)
    if req.model != cfg.model:
        raise _unknown_model(req.model, cfg.model)
    heard, reply = await _heard_and_reply(services, req)
    tokens = split_tokens(reply)
    finish_reason = "stop"
    if req.token_limit is not None and len(tokens) > req.token_limit:
        tokens, finish_reason = tokens[: req.token_limit], "length"
    log.info(
        "chat stream=%s heard=%r reply=%r (asr %.0f ms)",
        req.stream,
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

    # Everything that could refuse the request has run: from here on only a client that goes
    # away stops the stream (json_errors logs that at INFO).
    resp = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await resp.prepare(request)

    def event(choices: list[dict[str, Any]], **extra: Any) -> bytes:
        body = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": cfg.model,
            "choices": choices,
            **extra,
        }
        return b"data: " + json.dumps(body).encode() + b"\n\n"

    def delta(content: dict[str, Any], finish: str | None = None) -> bytes:
        return event([{"index": 0, "delta": content, "finish_reason": finish}])

    await resp.write(delta({"role": "assistant", "content": ""}))
    async for token in paced(tokens, cfg.first_token_delay_s, cfg.tokens_per_s):
        await resp.write(delta({"content": token}))
    await resp.write(delta({}, finish_reason))
    if req.include_usage:
        await resp.write(event([], usage=_usage(req, len(tokens))))
    await resp.write(b"data: [DONE]\n\n")
    await resp.write_eof()
    return resp


async def transcriptions(request: web.Request) -> web.Response:
    services = request.app[SERVICES_KEY]
    if request.content_type != "multipart/form-data":
        raise ApiError(415, "unsupported_media_type",
                       "send multipart/form-data with a 'file' field (the audio) "
                       "and a 'model' field",
                       valid=["multipart/form-data"])
    try:
        form = await request.post()  # over client_max_size: 413, mapped by json_errors
    except (ValueError, HttpProcessingError) as exc:  # a malformed multipart body
        raise ApiError(400, "invalid_multipart",
                       f"the multipart body cannot be read: {exc}") from None
    upload = form.get("file")
    if not isinstance(upload, web.FileField):
        raise ApiError(400, "missing_field", "'file' (an audio file upload) is required",
                       field="file")
    # the text fields get the same checks, and errors, as a JSON body; empty ones are unset
    fields = {k: v for k, v in form.items() if isinstance(v, str) and v}
    params = validate_json(json.dumps(fields).encode(), TranscriptionForm)
    if params.model != services.config.model:
        raise _unknown_model(params.model, services.config.model)
    with _asr_slot(services):
        result = await _transcribe(services, upload.file.read(), "file", MAX_AUDIO_S, params.prompt)
    log.info("transcription %r (%.2f s of audio)", result.text, result.duration_s)
    if params.response_format == "text":
        return web.Response(text=result.text + "\n")
    if params.response_format == "verbose_json":
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
    app = web.Application(
        middlewares=[json_errors(log, error_type=openai_error_type), bearer_key],
        client_max_size=MAX_BODY_BYTES,
    )
    app[SERVICES_KEY] = Services(config, transcriber, responder, int(time.time()))
    app[OPENAPI_KEY] = openapi_spec(config.model, bearer=config.api_key is not None)
    app.router.add_get("/health", health)
    app.router.add_get("/healthz", health)
    app.router.add_get("/openapi.json", openapi)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/v1/models/{model}", get_model)
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/v1/audio/transcriptions", transcriptions)
    return app
