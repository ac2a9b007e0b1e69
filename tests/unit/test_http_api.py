"""The shared JSON HTTP conventions, on a small real aiohttp app."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Annotated, Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pydantic import BaseModel, ConfigDict, Field

from streamtalk_common.http_api import (
    BEARER,
    MAX_JSON_DEPTH,
    ApiError,
    Operation,
    api_key_header,
    json_depth,
    json_errors,
    openapi_document,
    read_model,
)

log = logging.getLogger("test_http_api")


class Echo(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: Annotated[str, Field(min_length=1, max_length=20)]
    seed: Annotated[int, Field(ge=0, le=2**63 - 1)] | None = None


async def echo(request: web.Request) -> web.Response:
    body = await read_model(request, Echo)
    return web.json_response(body.model_dump())


async def broken(request: web.Request) -> web.Response:
    raise RuntimeError("a bug")


async def refused(request: web.Request) -> web.Response:
    raise ApiError(503, "over_capacity", "full", headers={"Retry-After": "2"})


@pytest.fixture
async def client():
    app = web.Application(middlewares=[json_errors(log)], client_max_size=1024)
    app.router.add_post("/echo", echo)
    app.router.add_get("/broken", broken)
    app.router.add_get("/refused", refused)
    async with TestClient(TestServer(app)) as c:
        yield c


async def call(client: TestClient, method: str, path: str, raw: bytes | None = None,
               content_type: str = "application/json") -> tuple[int, dict[str, Any], Any]:
    resp = await client.request(method, path, data=raw, headers={"Content-Type": content_type})
    assert resp.content_type == "application/json", await resp.text()
    return resp.status, await resp.json(), resp.headers


@pytest.mark.parametrize("raw, code, field", [
    (b'{"text": "hi", "seed": 18446744073709551616}', "invalid_field", "seed"),
    (b'{"text": "hi", "seed": -1}', "invalid_field", "seed"),
    (b'{"text": "hi", "seed": 1.0}', "invalid_field", "seed"),
    (b'{"text": "hi", "seed": "1"}', "invalid_field", "seed"),
    (b'{"text": 5}', "invalid_field", "text"),
    (b'{"text": ""}', "invalid_field", "text"),
    (b'{"seed": 1}', "missing_field", "text"),
    (b'{"text": "hi", "voice": "x"}', "invalid_field", "voice"),
    (b'{"text": "a\\ud800b"}', "invalid_json", None),  # an unpaired surrogate
    (b'{"text": "\xff"}', "invalid_json", None),
    (b'{"text": "hi"', "invalid_json", None),
    (b'[1, 2]', "invalid_field", None),
])
async def test_a_bad_body_is_a_400_naming_what_is_wrong(client, raw, code, field) -> None:
    status, body, _ = await call(client, "POST", "/echo", raw)
    assert status == 400, body
    assert body["error"]["code"] == code, body
    assert body["error"].get("field") == field, body


async def test_nesting_beyond_the_bound_is_refused_and_within_it_reaches_the_model(client) -> None:
    deep = b'{"text": "hi", "x": ' + b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH + b"}"
    status, body, _ = await call(client, "POST", "/echo", deep)
    assert status == 400 and f"deeper than {MAX_JSON_DEPTH}" in body["error"]["message"]
    shallow = (b'{"text": "hi", "x": ' + b"[" * (MAX_JSON_DEPTH - 2) + b"]" * (MAX_JSON_DEPTH - 2)
               + b"}")
    status, body, _ = await call(client, "POST", "/echo", shallow)
    assert status == 400 and body["error"]["field"] == "x"  # refused by the model, not the bound


def test_brackets_inside_strings_do_not_count() -> None:
    assert json_depth(b'{"a": "[[[[{{{\\"]]]"}') == 1
    assert json_depth(b'[[{"a": [1]}]]') == 4


async def test_a_good_body_passes(client) -> None:
    status, body, _ = await call(client, "POST", "/echo",
                                 json.dumps({"text": "hi", "seed": 2**63 - 1}).encode())
    assert status == 200 and body == {"text": "hi", "seed": 2**63 - 1}


async def test_http_errors_are_json_too(client) -> None:
    status, body, headers = await call(client, "GET", "/echo")
    assert status == 405 and body["error"]["valid"] == ["POST"] and headers["Allow"] == "POST"
    status, body, _ = await call(client, "GET", "/nothing\x00here")
    assert status == 404 and body["error"]["code"] == "not_found"
    status, body, _ = await call(client, "POST", "/echo", b'{"text": "' + b"a" * 2000 + b'"}')
    assert status == 413 and "1024 bytes" in body["error"]["message"]
    status, body, _ = await call(client, "POST", "/echo", b"{}", content_type="text/plain")
    assert status == 415


async def test_a_bug_is_a_json_500_and_a_refusal_keeps_its_headers(client, caplog) -> None:
    with caplog.at_level(logging.ERROR):
        status, body, _ = await call(client, "GET", "/broken")
    assert status == 500 and body["error"]["code"] == "internal_error"
    assert "a bug" in caplog.text and "a bug" not in json.dumps(body)
    status, body, headers = await call(client, "GET", "/refused")
    assert status == 503 and headers["Retry-After"] == "2" \
        and body["error"]["code"] == "over_capacity"


def test_the_openapi_document_carries_the_models_constraints() -> None:
    doc = openapi_document("echo", "1",
                           [Operation("POST", "/echo", "echo", Echo, {200: "ok", 400: "bad"})])
    schema = doc["components"]["schemas"]["Echo"]
    assert schema["properties"]["text"]["maxLength"] == 20
    assert schema["required"] == ["text"] and schema["additionalProperties"] is False
    op = doc["paths"]["/echo"]["post"]
    assert (op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
            == "#/components/schemas/Echo")
    assert (op["responses"]["400"]["content"]["application/json"]["schema"]["$ref"]
            == "#/components/schemas/Error")


async def test_a_client_that_goes_away_is_an_info_line(caplog) -> None:
    async def slow(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        try:
            while True:
                await resp.write(b"x" * 65536)
        except asyncio.CancelledError:
            pass  # the race this reproduces: the next write notices the disconnect first
        await resp.write(b"more")
        return resp

    app = web.Application(middlewares=[json_errors(log)])
    app.router.add_get("/slow", slow)
    with caplog.at_level(logging.INFO):
        async with TestClient(TestServer(app)) as c:
            resp = await c.get("/slow")
            await resp.content.read(10)
            resp.close()
            await c.close()
            await asyncio.sleep(0.2)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    ours = [r for r in caplog.records if r.name == log.name]
    assert [r.levelname for r in ours] == ["INFO"], caplog.text
    assert "the client went away" in ours[0].getMessage() and ours[0].exc_info is None


async def test_a_request_that_is_not_http_is_an_info_line(client, caplog) -> None:
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nX-Bad: a\x00b\r\nContent-Length: 2\r\n\r\n{}")
    await writer.drain()
    with caplog.at_level(logging.DEBUG):
        status_line = await asyncio.wait_for(reader.readline(), 5)
        await asyncio.sleep(0.1)
    writer.close()
    assert status_line.split()[1] == b"400", status_line
    server = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert server and all(r.levelno == logging.INFO and r.exc_info is None
                          for r in server), caplog.text
    assert "malformed HTTP" in server[0].getMessage()


def test_a_security_scheme_guards_every_operation_but_the_open_ones() -> None:
    ops = [Operation("POST", "/echo", "echo", Echo), Operation("GET", "/healthz", "health")]
    doc = openapi_document("echo", "1", ops, security=BEARER, open_paths={"/healthz"})
    assert doc["components"]["securitySchemes"] == {"bearer": {"type": "http", "scheme": "bearer"}}
    assert doc["paths"]["/echo"]["post"]["security"] == [{"bearer": []}]
    assert doc["paths"]["/healthz"]["get"]["security"] == []
    doc = openapi_document("echo", "1", ops, security=api_key_header("X-Key"))
    assert doc["components"]["securitySchemes"]["key"] == {"type": "apiKey", "in": "header",
                                                           "name": "X-Key"}
    assert "security" not in openapi_document("echo", "1", ops)["paths"]["/echo"]["post"]
