"""The JSON HTTP conventions of every streamtalk service (aiohttp + pydantic).

- A request body is validated whole before any status line is sent: the size by the app's
  `client_max_size`, the nesting depth by `MAX_JSON_DEPTH`, then syntax, types, ranges and
  Unicode by a pydantic model in strict mode (`read_model`). A string with an unpaired
  surrogate is invalid JSON here, so it never reaches a tokenizer.
- Every error is a JSON body `{"error": {"code", "message", "field"?, "valid"?, "type"?}}`,
  4xx and 5xx alike (`json_errors`); `type` is the OpenAI error type where a service speaks
  OpenAI's dialect.
- A client that goes away mid-request is an INFO line, never a traceback; so is a request
  aiohttp cannot parse as HTTP (it answers those with a plain-text 400 before any
  middleware runs).
- The OpenAPI document is generated from the same pydantic models (`openapi_document`).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from pydantic import BaseModel, ValidationError

MAX_JSON_DEPTH = 32  # objects/arrays nested deeper are refused before parsing
MAX_REPORTED_ERRORS = 3

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Model = TypeVar("Model", bound=BaseModel)

_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_JSON_BRACKET = re.compile(rb"[\[\]{}]")


class ApiError(web.HTTPException):
    """A request the service refuses, with what a caller needs to correct it; raised from a
    handler it is the response (a JSON body)."""

    def __init__(self, status: int, code: str, message: str, *, field: str | None = None,
                 valid: list[Any] | None = None, type: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        self.status_code = status
        self.code, self.message, self.field, self.valid, self.type = (
            code, message, field, valid, type)
        super().__init__(text=json.dumps(self.payload(), ensure_ascii=False),
                         content_type="application/json", headers=headers)

    def payload(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        for key in ("field", "valid", "type"):
            if getattr(self, key) is not None:
                error[key] = getattr(self, key)
        return {"error": error}

    def typed(self, type: str | None) -> ApiError:
        """This error with OpenAI's error `type` (for services that speak OpenAI)."""
        if type is None or self.type is not None:
            return self
        headers = {k: v for k, v in self.headers.items()
                   if k not in ("Content-Type", "Content-Length")}
        return ApiError(self.status_code, self.code, self.message, field=self.field,
                        valid=self.valid, type=type, headers=headers)


def json_depth(raw: bytes) -> int:
    """How deeply objects and arrays nest in `raw` (brackets inside strings do not count)."""
    depth = deepest = 0
    for bracket in _JSON_BRACKET.findall(_JSON_STRING.sub(b"", raw)):
        depth += 1 if bracket in (b"[", b"{") else -1
        deepest = max(deepest, depth)
    return deepest


async def read_model(request: web.Request, model: type[Model]) -> Model:
    """The body as `model`, or an ApiError saying what is wrong and what is valid."""
    if request.content_type != "application/json":
        raise ApiError(415, "unsupported_media_type",
                       f"Content-Type must be application/json, got {request.content_type!r}")
    raw = await request.read()  # over client_max_size: 413, mapped by json_errors
    return validate_json(raw, model)


def validate_json(raw: bytes, model: type[Model]) -> Model:
    if json_depth(raw) > MAX_JSON_DEPTH:
        raise ApiError(400, "invalid_json", f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        return model.model_validate_json(raw, strict=True)
    except ValidationError as exc:
        raise _validation_error(exc) from None


def _validation_error(exc: ValidationError) -> ApiError:
    errors = exc.errors(include_url=False)
    first = errors[0]
    if first["type"] == "json_invalid":
        return ApiError(400, "invalid_json", f"the body is not valid JSON: {first['msg']}")
    where = ".".join(str(part) for part in first["loc"]) or None
    messages = [f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}"
                for e in errors[:MAX_REPORTED_ERRORS]]
    code = "missing_field" if first["type"] == "missing" else "invalid_field"
    return ApiError(400, code, "; ".join(messages), field=where)


_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}


class _MalformedRequestsAtInfo(logging.Filter):
    """aiohttp logs a request it cannot parse as an ERROR with a traceback: the client's
    mistake, so one INFO line."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            record.msg = f"{record.getMessage()}: malformed HTTP ({exc.message})"
            record.args = ()
            record.exc_info = record.exc_text = None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


_MALFORMED_FILTER = _MalformedRequestsAtInfo()


def json_errors(log: logging.Logger, *, error_type: Callable[[int], str | None] = lambda _: None):
    """Middleware: every error leaves as JSON; a vanished client is logged at INFO (as is a
    request aiohttp could not parse: the filter goes on aiohttp's server logger).

    `error_type` names OpenAI's error `type` for a status, for services that speak OpenAI."""
    logging.getLogger("aiohttp.server").addFilter(_MALFORMED_FILTER)  # once: filters are a set

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as exc:
            raise exc.typed(error_type(exc.status_code)) from None
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            raise _from_http_exception(request, exc, error_type(exc.status)) from None
        except Exception as exc:
            transport = request.transport
            if isinstance(exc, ConnectionResetError) and (transport is None
                                                          or transport.is_closing()):
                log.info("%s %s: the client went away", request.method, request.path)
                # aiohttp finds the connection closed when it sends this, and drops it quietly
                return web.Response(status=499, reason="Client Closed Request")
            log.exception("internal error on %s %s", request.method, request.path)
            raise ApiError(500, "internal_error", "internal server error (see the server log)",
                           type=error_type(500)) from None

    return middleware


def _from_http_exception(request: web.Request, exc: web.HTTPException,
                         error_type: str | None) -> ApiError:
    valid = None
    if exc.status == 404:
        message = f"no route {request.method} {request.path}"
    elif exc.status == 405:
        message = f"{request.method} is not allowed on {request.path}"
        valid = sorted(getattr(exc, "allowed_methods", ()))
    elif exc.status == 413:
        message = f"the request body is larger than {request.app._client_max_size} bytes"
    else:
        message = exc.reason
    code = _HTTP_CODES.get(exc.status, "http_error")
    return ApiError(exc.status, code, message, valid=valid, type=error_type,
                    headers={k: v for k, v in exc.headers.items() if k == "Allow"})


# -- OpenAPI ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Operation:
    """One route as the OpenAPI document shows it."""

    method: str
    path: str
    summary: str
    request: type[BaseModel] | None = None
    responses: dict[int, str] = field(default_factory=lambda: {200: "OK"})
    response_types: dict[int, str] = field(default_factory=lambda: {200: "application/json"})


ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {
        "type": "object",
        "required": ["code", "message"],
        "properties": {
            "code": {"type": "string"},
            "message": {"type": "string"},
            "field": {"type": "string"},
            "valid": {"type": "array"},
            "type": {"type": "string"},
        },
    }},
}


SecurityScheme = tuple[str, dict[str, Any]]  # its name in the document, its definition
BEARER: SecurityScheme = ("bearer", {"type": "http", "scheme": "bearer"})


def api_key_header(header: str) -> SecurityScheme:
    return ("key", {"type": "apiKey", "in": "header", "name": header})


def openapi_document(title: str, version: str, operations: Iterable[Operation], *,
                     security: SecurityScheme | None = None,
                     open_paths: Collection[str] = ()) -> dict[str, Any]:
    """An OpenAPI 3.1 document of `operations`, request schemas taken from their models.
    With a `security` scheme (BEARER, api_key_header(...)) every operation requires it but
    those on `open_paths`."""
    schemas: dict[str, Any] = {"Error": ERROR_SCHEMA}
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        entry: dict[str, Any] = {"summary": op.summary, "responses": {}}
        if op.request is not None:
            schema = op.request.model_json_schema(ref_template="#/components/schemas/{model}")
            schemas.update(schema.pop("$defs", {}))
            schemas[op.request.__name__] = schema
            entry["requestBody"] = {"required": True, "content": {"application/json": {
                "schema": {"$ref": f"#/components/schemas/{op.request.__name__}"}}}}
        for status, description in op.responses.items():
            media = op.response_types.get(status, "application/json")
            content = ({"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
                       if status >= 400 else {media: {}})
            entry["responses"][str(status)] = {"description": description, "content": content}
        paths.setdefault(op.path, {})[op.method.lower()] = entry
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {"schemas": schemas},
    }
    if security is not None:
        name, scheme = security
        document["components"]["securitySchemes"] = {name: scheme}
        for path, item in paths.items():
            for entry in item.values():
                entry["security"] = [] if path in open_paths else [{name: []}]
    return document
