"""The dev backend's OpenAPI document, its request schemas those of the protocol models."""

from __future__ import annotations

from typing import Any

from streamtalk_common.http_api import BEARER, MAX_JSON_DEPTH, Operation, openapi_document

from .protocol import MAX_AUDIO_S, MAX_BODY_BYTES, ChatCompletionRequest, TranscriptionForm

OPEN_PATHS = frozenset({"/health", "/healthz", "/openapi.json"})  # no API key needed

_UNAUTHORIZED = "missing or wrong bearer key (only with OMNI_DEV_API_KEY set)"
_AUDIO_ERRORS = {
    400: "the request is not valid, or its audio cannot be decoded "
         "(what is wrong and what is valid)",
    401: _UNAUTHORIZED,
    404: "no such model (the one served is named)",
    413: f"the body is larger than {MAX_BODY_BYTES} bytes, or its audio lasts more than "
         f"{MAX_AUDIO_S:g} s",
    503: "speech recognition is full: retry after Retry-After",
}
OPERATIONS = (
    Operation("GET", "/health", "Liveness"),
    Operation("GET", "/healthz", "Liveness"),
    Operation("GET", "/openapi.json", "This document"),
    Operation("GET", "/v1/models", "The served model", None,
              {200: "a list holding the one served model", 401: _UNAUTHORIZED}),
    Operation("GET", "/v1/models/{model}", "One model", None,
              {200: "the model", 401: _UNAUTHORIZED, 404: "no such model"}),
    Operation("POST", "/v1/chat/completions",
              "A scripted chat completion; "
              "audio in the last user message is transcribed and answered",
              ChatCompletionRequest,
              {200: "the completion (JSON), or server-sent events with stream=true",
               **_AUDIO_ERRORS, 415: "the body is not application/json"}),
    Operation("POST", "/v1/audio/transcriptions", "Speech to text (English)", None,
              {200: "the text: JSON, or plain text with response_format=text",
               **_AUDIO_ERRORS, 415: "the body is not multipart/form-data"}),
)


def _transcription_form_schema(model: str) -> dict[str, Any]:
    schema = TranscriptionForm.model_json_schema()
    schema["properties"]["model"]["enum"] = [model]
    schema["properties"]["file"] = {"type": "string", "format": "binary",
                                    "description": "the audio (wav, mp3, ogg, flac...)"}
    schema["required"].append("file")
    return schema


def openapi_spec(model: str, bearer: bool) -> dict[str, Any]:
    """The document of a backend serving `model` (with a bearer key when `bearer`)."""
    doc = openapi_document("streamtalk dev Omni backend", "1", OPERATIONS,
                           security=BEARER if bearer else None, open_paths=OPEN_PATHS)
    # what an Operation cannot say: the one model served, the path parameter, the multipart
    # body and the second media types of 200
    doc["components"]["schemas"]["ChatCompletionRequest"]["properties"]["model"]["enum"] = [model]
    paths = doc["paths"]
    paths["/v1/models/{model}"]["get"]["parameters"] = [
        {"name": "model", "in": "path", "required": True, "schema": {"enum": [model]}}]
    paths["/v1/chat/completions"]["post"]["responses"]["200"]["content"]["text/event-stream"] = {}
    transcription = paths["/v1/audio/transcriptions"]["post"]
    transcription["requestBody"] = {"required": True, "content": {
        "multipart/form-data": {"schema": _transcription_form_schema(model)}}}
    transcription["responses"]["200"]["content"]["text/plain"] = {}
    doc["info"]["description"] = (
        f"Bodies of at most {MAX_BODY_BYTES} bytes, JSON nested at most {MAX_JSON_DEPTH} deep, "
        f"at most {MAX_AUDIO_S:g} s of audio per request.")
    return doc
