"""The local Omni-compatible backend: real ASR, scripted replies, OpenAI wire format, and
hostile input: every bad request a JSON error before any status line, bounded bodies, JSON
nesting, audio and speech-recognition queue, a published OpenAPI document. Its scripted
responder and pacing alone: unit/test_omni_dev_responder.py."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import subprocess
import sys
import time
import wave
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from aiohttp import web
from support.infra import REPO_ROOT, OmniDevServer, service_env, start_omni_dev_process

from streamtalk_common.http_api import MAX_JSON_DEPTH
from tools.omni_dev.app import MAX_ASR_REQUESTS, SERVICES_KEY, create_app
from tools.omni_dev.asr import Transcriber
from tools.omni_dev.config import OmniDevConfig
from tools.omni_dev.protocol import MAX_AUDIO_S, MAX_BODY_BYTES, MAX_TOKENS_LIMIT
from tools.omni_dev.responder import ScriptedResponder, split_tokens

pytestmark = pytest.mark.timeout(180)
HTTP_TIMEOUT = aiohttp.ClientTimeout(total=60)
RULES = json.loads((REPO_ROOT / "tools" / "omni_dev" / "responses.json").read_text())
WEATHER_REPLY = next(r["reply"] for r in RULES["rules"] if "weather" in r["keywords"])
HELLO_REPLY = next(r["reply"] for r in RULES["rules"] if "hello" in r["keywords"])


@pytest.fixture(scope="module")
def weather_wav(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    from support.infra import make_speech_wav_file

    path = tmp_path_factory.mktemp("omni") / "weather.wav"
    make_speech_wav_file("What is the weather like today?", path, sample_rate=16000)
    return path.read_bytes()


def audio_part(wav: bytes) -> dict[str, Any]:
    url = "data:audio/wav;base64," + base64.b64encode(wav).decode()
    return {"type": "audio_url", "audio_url": {"url": url}}


def quiet_wav(seconds: float, rate: int = 8000) -> bytes:
    """8-bit mono WAV of faint noise: long audio in few bytes."""
    pcm = np.random.default_rng(0).normal(128, 2, int(seconds * rate)).clip(0, 255)
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(1)
        w.setframerate(rate)
        w.writeframes(pcm.astype(np.uint8).tobytes())
    return out.getvalue()


def audio_chat(*clips: bytes, stream: bool = False) -> dict[str, Any]:
    parts = [{"type": "input_audio", "input_audio": {"data": base64.b64encode(c).decode()}}
             for c in clips]
    return {"model": "qwen3-omni-dev", "stream": stream,
            "messages": [{"role": "user", "content": parts}]}


async def post_json(server: OmniDevServer, path: str, body: Any) -> tuple[int, Any]:
    async with aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as s:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        async with s.post(
            server.base_url + path, data=data, headers={"Content-Type": "application/json"}
        ) as r:
            return r.status, await r.json()


async def stream_chat(
    server: OmniDevServer, body: dict[str, Any], api_key: str = "EMPTY"
) -> list[tuple[float, Any]]:
    """POST with stream=true; returns (arrival time, parsed event) per SSE event."""
    events: list[tuple[float, Any]] = []
    headers = {"Authorization": f"Bearer {api_key}"}
    async with aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as s:
        async with s.post(server.base_url + "/chat/completions", json=body, headers=headers) as r:
            assert r.status == 200, await r.text()
            assert r.headers["Content-Type"].startswith("text/event-stream")
            async for raw in r.content:
                line = raw.decode().strip()
                if not line:
                    continue
                assert line.startswith("data: "), line
                payload = line[len("data: ") :]
                events.append(
                    (time.monotonic(), payload if payload == "[DONE]" else json.loads(payload))
                )
    return events


# ----------------------------------------------------------------------------- start-up


def test_bad_responses_file_refuses_to_start(tmp_path: Path) -> None:
    bad = tmp_path / "rules.json"
    bad.write_text("not json")
    proc = subprocess.run(
        [sys.executable, "-m", "tools.omni_dev", "--port", "0", "--responses", str(bad)],
        cwd=REPO_ROOT,
        env=service_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "not JSON" in proc.stderr


# ----------------------------------------------------------------------------- HTTP


async def test_models(omni_dev_server: OmniDevServer) -> None:
    async with aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as s:
        async with s.get(omni_dev_server.base_url + "/models") as r:
            body = await r.json()
        assert [m["id"] for m in body["data"]] == ["qwen3-omni-dev"]
        async with s.get(omni_dev_server.base_url + "/models/qwen3-omni-dev") as r:
            assert r.status == 200
        async with s.get(omni_dev_server.base_url + "/models/gpt-4o") as r:
            assert r.status == 404
            assert (await r.json())["error"]["code"] == "model_not_found"


async def test_text_chat_non_streaming(omni_dev_server: OmniDevServer) -> None:
    status, body = await post_json(
        omni_dev_server,
        "/chat/completions",
        {
            "model": "qwen3-omni-dev",
            "messages": [
                {"role": "system", "content": "You are a helpful voice assistant."},
                {"role": "user", "content": "Hello!"},
            ],
            "max_tokens": 150,
            "temperature": 0.3,
        },
    )
    assert status == 200, body
    assert body["object"] == "chat.completion"
    (choice,) = body["choices"]
    assert choice["message"] == {"role": "assistant", "content": HELLO_REPLY}
    assert choice["finish_reason"] == "stop"
    assert body["usage"]["completion_tokens"] == len(split_tokens(HELLO_REPLY))


async def test_text_chat_streaming_matches_non_streaming(omni_dev_server: OmniDevServer) -> None:
    body = {
        "model": "qwen3-omni-dev",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "tell me a story"}]}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    events = await stream_chat(omni_dev_server, body)
    assert events[-1][1] == "[DONE]"
    chunks = [e for _, e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    content = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finishes[-1] == "stop" and all(f is None for f in finishes[:-1])
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 20
    assert len({c["id"] for c in chunks}) == 1
    _, full = await post_json(omni_dev_server, "/chat/completions", {**body, "stream": False})
    assert content == full["choices"][0]["message"]["content"]
    assert content.startswith("Once upon a time")


async def test_the_previous_user_turn_of_the_request_is_quoted(
    omni_dev_server: OmniDevServer,
) -> None:
    """How a test sees that a conversation's history reached the model."""
    question = {"role": "user", "content": "What did I ask you before?"}
    history = [{"role": "system", "content": "Be brief."},
               {"role": "user", "content": [{"type": "text", "text": "What is the weather like?"}]},
               {"role": "assistant", "content": WEATHER_REPLY}]
    replies = []
    for messages in (history + [question], [question]):
        status, body = await post_json(omni_dev_server, "/chat/completions",
                                       {"model": "qwen3-omni-dev", "messages": messages})
        assert status == 200, body
        replies.append(body["choices"][0]["message"]["content"])
    assert replies == ["Before this you said: What is the weather like.",
                       "Before this you said: nothing yet."]


async def test_max_tokens_truncates_with_length(omni_dev_server: OmniDevServer) -> None:
    status, body = await post_json(
        omni_dev_server,
        "/chat/completions",
        {
            "model": "qwen3-omni-dev",
            "messages": [{"role": "user", "content": "hello"}],
            "max_tokens": 3,
        },
    )
    assert status == 200
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["choices"][0]["message"]["content"] == "".join(split_tokens(HELLO_REPLY)[:3])


async def test_audio_is_transcribed_then_answered(
    omni_dev_server: OmniDevServer, weather_wav: bytes
) -> None:
    events = await stream_chat(
        omni_dev_server,
        {
            "model": "qwen3-omni-dev",
            "stream": True,
            "messages": [
                {"role": "system", "content": "Answer briefly."},
                {"role": "user", "content": [audio_part(weather_wav)]},
            ],
        },
    )
    content = "".join(
        e["choices"][0]["delta"].get("content", "") for _, e in events[:-1] if e["choices"]
    )
    assert content == WEATHER_REPLY


async def test_transcribe_instruction_returns_the_words(
    omni_dev_server: OmniDevServer, weather_wav: bytes
) -> None:
    status, body = await post_json(
        omni_dev_server,
        "/chat/completions",
        {
            "model": "qwen3-omni-dev",
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "Transcribe this audio exactly."},
                        {
                            "type": "input_audio",
                            "input_audio": {
                                "data": base64.b64encode(weather_wav).decode(),
                                "format": "wav",
                            },
                        },
                    ],
                }
            ],
        },
    )
    assert status == 200, body
    text = body["choices"][0]["message"]["content"].lower()
    assert "weather" in text and "today" in text


async def test_audio_transcriptions_endpoint(
    omni_dev_server: OmniDevServer, weather_wav: bytes
) -> None:
    async with aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as s:
        for fmt in ("json", "text", "verbose_json"):
            form = aiohttp.FormData()
            form.add_field("file", weather_wav, filename="a.wav", content_type="audio/wav")
            form.add_field("model", "qwen3-omni-dev")
            form.add_field("response_format", fmt)
            async with s.post(omni_dev_server.base_url + "/audio/transcriptions", data=form) as r:
                assert r.status == 200, await r.text()
                if fmt == "text":
                    text = await r.text()
                else:
                    body = await r.json()
                    text = body["text"]
                    if fmt == "verbose_json":
                        assert 1.0 < body["duration"] < 4.0 and body["segments"]
            assert "weather" in text.lower(), (fmt, text)


async def test_official_openai_client_works(
    omni_dev_server: OmniDevServer, weather_wav: bytes
) -> None:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=omni_dev_server.base_url, api_key="EMPTY", timeout=60)
    try:
        models = await client.models.list()
        assert [m.id for m in models.data] == ["qwen3-omni-dev"]
        stream = await client.chat.completions.create(
            model="qwen3-omni-dev",
            messages=[{"role": "user",  # type: ignore[list-item]
                       "content": [audio_part(weather_wav)]}],
            stream=True,
        )
        parts = [c.choices[0].delta.content or "" async for c in stream if c.choices]
        assert "".join(parts) == WEATHER_REPLY
        tr = await client.audio.transcriptions.create(
            model="qwen3-omni-dev", file=("a.wav", weather_wav, "audio/wav")
        )
        assert "weather" in tr.text.lower()
    finally:
        await client.close()


async def test_first_token_delay_and_rate_are_configurable() -> None:
    server = start_omni_dev_process(
        OMNI_DEV_FIRST_TOKEN_DELAY_S="0.4",
        OMNI_DEV_TOKENS_PER_S="20",
        OMNI_DEV_MODEL="custom-omni",
        OMNI_DEV_API_KEY="sk-dev",
    )
    try:
        async with aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as s:
            async with s.get(server.base_url + "/models") as r:
                assert r.status == 401
                error = (await r.json())["error"]
                assert error["code"] == "invalid_api_key" \
                    and error["type"] == "authentication_error"
            async with s.get(server.base_url.removesuffix("/v1") + "/openapi.json") as r:
                assert r.status == 200  # the document needs no key, and says which routes do
                doc = await r.json()
                assert doc["paths"]["/v1/models"]["get"]["security"] == [{"bearer": []}]
        t0 = time.monotonic()
        events = await stream_chat(
            server,
            {
                "model": "custom-omni",
                "stream": True,
                "messages": [{"role": "user", "content": "hi"}],
            },
            api_key="sk-dev",
        )
        content_times = [
            t - t0
            for t, e in events[:-1]
            if e["choices"] and e["choices"][0]["delta"].get("content")
        ]
        n = len(content_times)
        assert n == len(split_tokens(HELLO_REPLY))
        assert 0.38 <= content_times[0] < 1.0
        # n tokens at 20/s: the last arrives (n-1)/20 s after the first
        span = content_times[-1] - content_times[0]
        assert (n - 1) / 20 - 0.05 <= span <= (n - 1) / 20 + 0.5
    finally:
        server.process.stop()


BAD_REQUESTS: list[tuple[str, Any, int, str | None]] = [
    ("not json", b"{nope", 400, None),
    ("array body", [], 400, None),
    ("missing model", {"messages": [{"role": "user", "content": "hi"}]}, 400, "model"),
    ("unknown model",
     {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]},
     404, "model"),
    ("missing messages", {"model": "qwen3-omni-dev"}, 400, "messages"),
    ("empty messages", {"model": "qwen3-omni-dev", "messages": []}, 400, "messages"),
    ("no user message",
     {"model": "qwen3-omni-dev", "messages": [{"role": "system", "content": "x"}]},
     400, "messages"),
    ("bad role",
     {"model": "qwen3-omni-dev", "messages": [{"role": "robot", "content": "hi"}]},
     400, "messages.0.role"),
    ("content not list",
     {"model": "qwen3-omni-dev", "messages": [{"role": "user", "content": 5}]},
     400, "messages.0.content"),
    ("unknown part",
     {"model": "qwen3-omni-dev", "messages": [{"role": "user", "content": [{"type": "smell"}]}]},
     400, "messages.0.content.parts.0.type"),
    ("image part",
     {"model": "qwen3-omni-dev",
      "messages": [{"role": "user",
                    "content": [{"type": "image_url",
                                 "image_url": {"url": "data:image/png;base64,AAAA"}}]}]},
     400, "messages.0.content.parts.0.type"),
    ("part without its field",
     {"model": "qwen3-omni-dev",
      "messages": [{"role": "user", "content": [{"type": "audio_url"}]}]},
     400, "messages.0.content.parts.0"),
    ("remote audio url",
     {"model": "qwen3-omni-dev",
      "messages": [{"role": "user",
                    "content": [{"type": "audio_url",
                                 "audio_url": {"url": "http://127.0.0.1/a.wav"}}]}]},
     400, "messages.0.content.parts.0.audio_url.url"),
    ("bad base64",
     {"model": "qwen3-omni-dev",
      "messages": [{"role": "user",
                    "content": [{"type": "audio_url",
                                 "audio_url": {"url": "data:audio/wav;base64,@@@"}}]}]},
     400, "messages.0.content.parts.0.audio_url.url"),
    ("bad base64 in an earlier turn",
     {"model": "qwen3-omni-dev",
      "messages": [{"role": "user",
                    "content": [{"type": "input_audio", "input_audio": {"data": "@@@"}}]},
                   {"role": "user", "content": "hi"}]},
     400, "messages.0.content.parts.0.input_audio.data"),
    ("not audio",
     {"model": "qwen3-omni-dev",
      "messages": [{"role": "user",
                    "content": [{"type": "audio_url",
                                 "audio_url": {"url": "data:audio/wav;base64,"
                                               + base64.b64encode(b"hello, not a wav file" * 10)
                                               .decode()}}]}]},
     400, "messages.0.content.parts.0"),
    ("n=2",
     {"model": "qwen3-omni-dev", "n": 2, "messages": [{"role": "user", "content": "hi"}]},
     400, "n"),
    ("n=true",
     {"model": "qwen3-omni-dev", "n": True, "messages": [{"role": "user", "content": "hi"}]},
     400, "n"),
    ("max_tokens 0",
     {"model": "qwen3-omni-dev", "max_tokens": 0, "messages": [{"role": "user", "content": "hi"}]},
     400, "max_tokens"),
    ("max_tokens past the model",
     {"model": "qwen3-omni-dev", "max_tokens": MAX_TOKENS_LIMIT + 1,
      "messages": [{"role": "user", "content": "hi"}]},
     400, "max_tokens"),
    ("max_tokens beyond 64 bits",
     {"model": "qwen3-omni-dev", "max_tokens": 2**64,
      "messages": [{"role": "user", "content": "hi"}]},
     400, "max_tokens"),
    ("max_tokens 1.0",
     {"model": "qwen3-omni-dev", "max_tokens": 1.0,
      "messages": [{"role": "user", "content": "hi"}]},
     400, "max_tokens"),
    ("stream not bool",
     {"model": "qwen3-omni-dev", "stream": "yes", "messages": [{"role": "user", "content": "hi"}]},
     400, "stream"),
    ("temperature",
     {"model": "qwen3-omni-dev", "temperature": 9, "messages": [{"role": "user", "content": "hi"}]},
     400, "temperature"),
    ("unpaired surrogate",
     b'{"model": "qwen3-omni-dev", "messages": [{"role": "user", "content": "a\\ud800b"}]}',
     400, None),
    ("not UTF-8",
     b'{"model": "qwen3-omni-dev", "messages": [{"role": "user", "content": "\xff"}]}',
     400, None),
]  # fmt: skip


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize(
    ("label", "body", "status", "field"), BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS]
)
async def test_malformed_chat_requests_get_json_errors_before_any_status_line(
    omni_dev_server: OmniDevServer, label: str, body: Any, status: int, field: str | None,
    stream: bool,
) -> None:
    if stream and isinstance(body, dict) and "stream" not in body:
        body = {**body, "stream": True}
    got, resp = await post_json(omni_dev_server, "/chat/completions", body)
    assert got == status, resp
    err = resp["error"]
    assert err.get("field") == field, err
    assert err["type"] == "invalid_request_error" and err["code"]
    assert isinstance(err["message"], str) and err["message"]


async def test_malformed_transcription_requests(
    omni_dev_server: OmniDevServer, weather_wav: bytes
) -> None:
    url = omni_dev_server.base_url + "/audio/transcriptions"
    async with aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as s:
        async with s.post(url, json={"model": "qwen3-omni-dev"}) as r:
            assert r.status == 415
            assert (await r.json())["error"]["valid"] == ["multipart/form-data"]
        cases = [
            ({"model": "qwen3-omni-dev"}, None, 400, "file"),
            ({}, weather_wav, 400, "model"),
            ({"model": "gpt-4o"}, weather_wav, 404, "model"),
            ({"model": "qwen3-omni-dev", "response_format": "srt"}, weather_wav, 400,
             "response_format"),
            ({"model": "qwen3-omni-dev", "language": "de"}, weather_wav, 400, "language"),
            ({"model": "qwen3-omni-dev"}, b"garbage bytes" * 10, 400, "file"),
            ({"model": "qwen3-omni-dev"}, b"", 400, "file"),
        ]
        for fields, data, status, field in cases:
            form = aiohttp.FormData(default_to_multipart=True)
            for k, v in fields.items():
                form.add_field(k, v)
            if data is not None:
                form.add_field("file", data, filename="a.wav", content_type="audio/wav")
            else:
                form.add_field("note", "no file")
            async with s.post(url, data=form) as r:
                body = await r.json()
                assert r.status == status, (field, body)
                assert body["error"]["field"] == field, body
        for raw, content_type in [
            (b"garbage", "multipart/form-data"),  # no boundary
            (b"garbage", "multipart/form-data; boundary=zz"),
            (b'--zz\r\nContent-Disposition: form-data; name="file"\r\n\r\nabc',
             "multipart/form-data; boundary=zz"),
        ]:  # fmt: skip
            async with s.post(url, data=raw, headers={"Content-Type": content_type}) as r:
                body = await r.json()
                assert r.status == 400 and body["error"]["code"] == "invalid_multipart", body


async def test_unknown_routes_and_methods(omni_dev_server: OmniDevServer) -> None:
    async with aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as s:
        async with s.get(omni_dev_server.base_url + "/embeddings") as r:
            assert r.status == 404
            assert "error" in await r.json()
        async with s.get(omni_dev_server.base_url + "/chat/completions") as r:
            assert r.status == 405
            assert (await r.json())["error"]["type"] == "invalid_request_error"


async def test_the_openapi_document_comes_from_the_models(omni_dev_server: OmniDevServer) -> None:
    import schemathesis

    async with aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as s:
        async with s.get(omni_dev_server.base_url.removesuffix("/v1") + "/openapi.json") as r:
            assert r.status == 200
            doc = await r.json()
    schema = schemathesis.openapi.from_dict(doc)
    operations = {f"{op.ok().method.upper()} {op.ok().path}" for op in schema.get_all_operations()}
    assert {"POST /v1/chat/completions", "POST /v1/audio/transcriptions",
            "GET /v1/models/{model}"} <= operations
    chat = doc["components"]["schemas"]["ChatCompletionRequest"]
    assert chat["required"] == ["model", "messages"]
    assert chat["properties"]["max_tokens"]["anyOf"][0]["maximum"] == MAX_TOKENS_LIMIT
    form = doc["paths"]["/v1/audio/transcriptions"]["post"]["requestBody"]["content"]
    upload = form["multipart/form-data"]["schema"]
    assert "file" in upload["required"] and upload["properties"]["file"]["format"] == "binary"
    assert upload["properties"]["response_format"]["enum"] == ["json", "text", "verbose_json"]


# ----------------------------------------------------------------------------- bounds, in process


@pytest.fixture(scope="module")
def transcriber() -> Any:
    t = Transcriber(OmniDevConfig.from_env({}).resolved_whisper_dir(), threads=1)
    yield t
    t.close()


@dataclass
class LocalBackend:
    app: web.Application
    client: aiohttp.ClientSession  # bound to the backend's address


@pytest.fixture
async def local_backend(transcriber: Transcriber) -> AsyncIterator[Callable[..., Any]]:
    """Factory: the backend's app in this process on a free port (settings as overrides),
    served as `python -m tools.omni_dev` serves it (web.run_app's runner)."""
    started: list[tuple[web.AppRunner, aiohttp.ClientSession]] = []

    async def start(**settings: Any) -> LocalBackend:
        config = OmniDevConfig.from_env({}, **settings)
        app = create_app(config, transcriber, ScriptedResponder.from_file(config.responses_path))
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        host, port = runner.addresses[0][:2]
        client = aiohttp.ClientSession(f"http://{host}:{port}", timeout=HTTP_TIMEOUT)
        started.append((runner, client))
        return LocalBackend(app, client)

    yield start
    for runner, client in started:
        await client.close()
        await runner.cleanup()


async def call(client: aiohttp.ClientSession, path: str, body: Any) -> tuple[int, dict[str, Any]]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with client.post(path, data=raw, headers={"Content-Type": "application/json"}) as r:
        return r.status, await r.json()


def upload(audio: bytes) -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("file", audio, filename="a.wav", content_type="audio/wav")
    form.add_field("model", "qwen3-omni-dev")
    return form


async def test_body_size_and_json_nesting_are_bounded(local_backend: Any) -> None:
    backend = await local_backend()
    client = backend.client
    huge = audio_chat(b"x" * (MAX_BODY_BYTES * 3 // 4 + 1024))  # over the bound as base64
    status, body = await call(client, "/v1/chat/completions", huge)
    assert status == 413 and f"larger than {MAX_BODY_BYTES} bytes" in body["error"]["message"]
    async with client.post("/v1/audio/transcriptions",
                           data=upload(b"x" * (MAX_BODY_BYTES + 1))) as r:
        assert r.status == 413 and r.content_type == "application/json"
    nested = {"model": "qwen3-omni-dev", "messages": [{"role": "user", "content": "hi"}],
              "extra": json.loads("[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH)}
    status, body = await call(client, "/v1/chat/completions", nested)
    assert status == 400 and f"deeper than {MAX_JSON_DEPTH}" in body["error"]["message"]
    nested["extra"] = json.loads("[" * (MAX_JSON_DEPTH - 2) + "]" * (MAX_JSON_DEPTH - 2))
    status, body = await call(client, "/v1/chat/completions", nested)
    assert status == 200, body  # unknown fields are ignored


async def test_audio_duration_is_bounded_per_request(local_backend: Any) -> None:
    backend = await local_backend(first_token_delay_s=0.0)
    client = backend.client
    too_long = quiet_wav(MAX_AUDIO_S + 1)
    for stream in (False, True):
        status, body = await call(client, "/v1/chat/completions",
                                  audio_chat(too_long, stream=stream))
        assert status == 413, body
        assert body["error"]["code"] == "audio_too_long"
        assert f"at most {MAX_AUDIO_S:g} s of audio" in body["error"]["message"]
        assert body["error"]["field"] == "messages.0.content.parts.0"
    # each clip within the bound, together beyond it: the second one is refused
    status, body = await call(client, "/v1/chat/completions",
                              audio_chat(quiet_wav(1), quiet_wav(MAX_AUDIO_S)))
    assert status == 413 and body["error"]["field"] == "messages.0.content.parts.1", body
    async with client.post("/v1/audio/transcriptions", data=upload(too_long)) as r:
        body = await r.json()
        assert r.status == 413 and body["error"]["field"] == "file", body
    status, body = await call(client, "/v1/chat/completions", audio_chat(quiet_wav(2)))
    assert status == 200, body
    assert backend.app[SERVICES_KEY].asr_requests == 0  # refused requests gave their slot back


async def test_speech_recognition_waits_in_a_bounded_queue(local_backend: Any) -> None:
    backend = await local_backend()
    client = backend.client
    clip = quiet_wav(10)

    async def transcribe() -> tuple[int, dict[str, Any], str | None]:
        async with client.post("/v1/audio/transcriptions", data=upload(clip)) as r:
            return r.status, await r.json(), r.headers.get("Retry-After")

    # all arrive while the first is still being recognised
    results = await asyncio.gather(*(transcribe() for _ in range(MAX_ASR_REQUESTS + 4)))
    refused = [(body, retry) for status, body, retry in results if status == 503]
    assert refused and len(refused) <= 4, [r[0] for r in results]
    assert all(b["error"]["code"] == "over_capacity" and retry == "1" for b, retry in refused)
    assert all(status in (200, 503) for status, _, _ in results)
    assert backend.app[SERVICES_KEY].asr_requests == 0
    async with client.post("/v1/audio/transcriptions", data=upload(clip)) as r:
        assert r.status == 200


async def test_a_client_that_leaves_mid_stream_is_an_info_line(
    local_backend: Any, caplog: pytest.LogCaptureFixture
) -> None:
    client = (await local_backend(first_token_delay_s=0.0, tokens_per_s=5.0)).client
    story = {"model": "qwen3-omni-dev", "stream": True,
             "messages": [{"role": "user", "content": "tell me a story"}]}
    with caplog.at_level(logging.INFO, logger="omni_dev"):
        resp = await client.post("/v1/chat/completions", json=story)
        assert resp.status == 200
        await resp.content.readline()  # the first event; the story takes 10 s more
        resp.close()
        for _ in range(50):
            if "the client went away" in caplog.text:
                break
            await asyncio.sleep(0.1)
    assert "POST /v1/chat/completions: the client went away" in caplog.text
    ours = [r for r in caplog.records if r.name.startswith("omni_dev")]
    assert all(r.levelno == logging.INFO and r.exc_info is None for r in ours), caplog.text
