"""The TTS server over real HTTP with the tiny checkpoint on CPU."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import time
import wave
from typing import Any

import aiohttp
import numpy as np
import pytest

from tts_engine.server import bind_socket
from tts_engine.synthesis import TTSModel

TEXT = "Hello there, this is a streaming test of the voice."


async def post(server, path: str, body: object, **kw) -> tuple[int, Any, bytes]:
    async with aiohttp.ClientSession() as s:
        data = body if isinstance(body, (bytes, str)) else json.dumps(body)
        headers = kw.pop("headers", {"Content-Type": "application/json"})
        async with s.post(server.url + path, data=data, headers=headers, **kw) as r:
            return r.status, r.headers.copy(), await r.read()


async def get_json(server, path: str) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as s, s.get(server.url + path) as r:
        return r.status, await r.json()


def pcm_of(body: bytes) -> np.ndarray:
    return np.frombuffer(body, dtype="<i2").astype(np.float32) / 32767.0


async def test_stream_headers_audio_and_metrics(tts_server):
    status, headers, body = await post(tts_server, "/tts/stream", {"text": TEXT, "speaker": "serena"})
    assert status == 200
    assert headers["X-Sample-Rate"] == "24000" and headers["X-Audio-Format"] == "s16le" and headers["X-Channels"] == "1"
    assert len(body) > 0 and len(body) % (1920 * 2) == 0  # whole 80 ms frames
    pcm = pcm_of(body)
    assert 0.02 < float(np.sqrt(np.mean(pcm**2))) < 0.5
    status, metrics = await get_json(tts_server, f"/tts/requests/{headers['X-Request-Id']}")
    assert status == 200
    assert metrics["frames"] * 1920 * 2 == len(body)
    # A one-frame first packet (audio after 80 ms of codes), then packets of 2 frames.
    assert metrics["packets"] == 1 + -(-(metrics["frames"] - 1) // 2)
    assert [p["frames"] for p in metrics["packet_log"][:2]] == [1, 2]
    assert metrics["stop_reason"] == "eos" and metrics["ttfa_ms"] > 0 and metrics["rtf"] > 0
    assert len(metrics["packet_log"]) == metrics["packets"]


async def test_first_bytes_arrive_before_generation_ends(tts_server):
    """Audio streams: the first chunk arrives long before the last one."""
    long_text = " ".join(["This sentence keeps the generator busy for a while."] * 4)
    arrivals = []
    async with aiohttp.ClientSession() as s:
        start = time.perf_counter()
        async with s.post(tts_server.url + "/tts/stream", json={"text": long_text, "speaker": "ryan"}) as r:
            assert r.status == 200
            async for chunk in r.content.iter_any():
                arrivals.append((time.perf_counter() - start, len(chunk)))
    assert len(arrivals) > 5
    first, last = arrivals[0][0], arrivals[-1][0]
    assert first < last / 4, (first, last)


async def test_stream_equals_synthesize_and_is_deterministic(tts_server, tiny_model_dir):
    body = {"text": TEXT, "speaker": "vivian", "language": "english"}
    streams = [await post(tts_server, "/tts/stream", body) for _ in range(3)]
    hashes = {hashlib.sha256(b).hexdigest() for _, _, b in streams}
    assert len(hashes) == 1  # determinism: one PCM hash
    status, headers, wav_bytes = await post(tts_server, "/synthesize", body)
    assert status == 200 and headers["Content-Type"] == "audio/wav"
    with wave.open(io.BytesIO(wav_bytes)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (24000, 1, 2)
        assert w.readframes(w.getnframes()) == streams[0][2]
    # The stream equals one offline decode of all codes (up to int16 rounding).
    model = TTSModel(tiny_model_dir)
    offline = model.decode(model.generate_codes(model.make_request(TEXT, "vivian", "english"))[0])
    assert np.abs(pcm_of(streams[0][2]) - offline).max() <= 1.5 / 32767


@pytest.mark.parametrize("packet_tokens", [1, 4])
async def test_packet_sizes_give_the_same_audio(tts_server, packet_tokens):
    base = await post(tts_server, "/tts/stream", {"text": TEXT, "speaker": "serena"})
    other = await post(tts_server, "/tts/stream", {"text": TEXT, "speaker": "serena", "packet_tokens": packet_tokens})
    diff = np.abs(pcm_of(base[2]) - pcm_of(other[2])).max()
    assert diff <= 1.5 / 32767
    _, metrics = await get_json(tts_server, f"/tts/requests/{other[1]['X-Request-Id']}")
    assert metrics["packets"] == 1 + -(-(metrics["frames"] - 1) // packet_tokens)


async def test_concurrent_streams_match_solo_runs(tts_server):
    texts = [f"Concurrent request number {i} says hello." for i in range(4)]
    solo = [await post(tts_server, "/tts/stream", {"text": t, "speaker": "aiden"}) for t in texts]
    together = await asyncio.gather(*[post(tts_server, "/tts/stream", {"text": t, "speaker": "aiden"}) for t in texts])
    for (s1, _, b1), (s2, _, b2) in zip(solo, together, strict=True):
        assert s1 == s2 == 200
        assert b1 == b2


async def test_disconnect_cancels_generation(tts_server):
    long_text = " ".join(["A long reply that the listener abandons halfway."] * 8)
    async with aiohttp.ClientSession() as s:
        r = await s.post(tts_server.url + "/tts/stream", json={"text": long_text, "speaker": "serena"})
        rid = r.headers["X-Request-Id"]
        await r.content.readexactly(1920 * 2)
        r.close()  # drop the connection mid-stream
    for _ in range(100):
        status, metrics = await get_json(tts_server, f"/tts/requests/{rid}")
        if status == 200:
            break
        await asyncio.sleep(0.1)
    assert status == 200, "cancelled request never finished"
    assert metrics["stop_reason"] == "cancelled"
    assert metrics["frames"] < 200
    async with aiohttp.ClientSession() as s, s.get(tts_server.url + "/metrics") as r:
        text = await r.text()
    assert "tts_active_streams 0.0" in text


async def test_openai_speech(tts_server):
    status, headers, body = await post(tts_server, "/v1/audio/speech", {"input": TEXT, "voice": "serena"})
    assert status == 200 and body[:4] == b"RIFF"
    stream_status, _, pcm_body = await post(
        tts_server, "/v1/audio/speech", {"input": TEXT, "voice": "serena", "response_format": "pcm", "stream": True}
    )
    assert stream_status == 200
    with wave.open(io.BytesIO(body)) as w:
        assert w.readframes(w.getnframes()) == pcm_body
    status, _, wav_stream = await post(tts_server, "/v1/audio/speech", {"input": TEXT, "voice": "serena", "stream": True})
    assert status == 200 and wav_stream[:4] == b"RIFF" and wav_stream[44:] == pcm_body


async def test_speakers_health_ready(tts_server):
    status, body = await get_json(tts_server, "/v1/speakers")
    assert status == 200 and "serena" in body["speakers"] and body["languages"][0] == "auto"
    assert (await get_json(tts_server, "/healthz"))[0] == 200
    status, body = await get_json(tts_server, "/readyz")
    assert status == 200 and body["ready"] is True


BAD_REQUESTS = [
    ("/tts/stream", b"{not json", 400, "invalid_json"),
    ("/tts/stream", {"speaker": "serena"}, 400, "missing_field"),
    ("/tts/stream", {"text": 5, "speaker": "serena"}, 400, "invalid_field"),
    ("/tts/stream", {"text": "Hi", "speaker": "nobody"}, 400, "unknown_speaker"),
    ("/tts/stream", {"text": "Hi", "speaker": "serena", "language": "klingon"}, 400, "unknown_language"),
    ("/tts/stream", {"text": "   ", "speaker": "serena"}, 400, "invalid_text"),
    ("/tts/stream", {"text": "x" * 2001, "speaker": "serena"}, 400, "text_too_long"),
    ("/tts/stream", {"text": "Hi", "speaker": "serena", "seed": 2**70}, 400, "invalid_request"),
    ("/tts/stream", {"text": "Hi", "speaker": "serena", "packet_tokens": 0}, 400, "invalid_field"),
    ("/tts/stream", [1, 2], 400, "invalid_json"),
    ("/synthesize", {"text": "Hi"}, 400, "missing_field"),
    ("/v1/audio/speech", {"input": "Hi", "voice": "serena", "response_format": "mp3"}, 400, "unsupported_response_format"),
    ("/v1/audio/speech", {"input": "Hi", "voice": "serena", "speed": 1.5}, 400, "invalid_field"),
]


@pytest.mark.parametrize("path,body,status,code", BAD_REQUESTS)
async def test_bad_input_gets_json_errors(tts_server, path, body, status, code):
    got_status, _, raw = await post(tts_server, path, body)
    assert got_status == status
    error = json.loads(raw)["error"]
    assert error["code"] == code and error["message"]
    if code == "unknown_speaker":
        assert "serena" in error["valid"]
    if code == "unknown_language":
        assert "english" in error["valid"]


async def test_wrong_content_type_and_unknown_route(tts_server):
    status, _, raw = await post(tts_server, "/tts/stream", "text=hi", headers={"Content-Type": "text/plain"})
    assert status == 415 and json.loads(raw)["error"]["code"] == "unsupported_media_type"
    status, body = await get_json(tts_server, "/nope")
    assert status == 404 and body["error"]["code"] == "not_found"
    # and the server keeps serving
    assert (await post(tts_server, "/tts/stream", {"text": "Still here.", "speaker": "serena"}))[0] == 200


def test_taken_port_is_refused_clearly(tts_server):
    with pytest.raises(Exception, match="cannot listen on 127.0.0.1"):
        bind_socket("127.0.0.1", tts_server.port)


async def test_bearer_key_guards_every_route_but_health(tiny_model_dir, tmp_path):
    from engine_fixtures import TTSServer

    server = TTSServer(tiny_model_dir, tmp_path / "server.log", {"TTS_API_KEY": "s3cret"})
    try:
        await asyncio.to_thread(server.wait_ready)
        assert (await get_json(server, "/healthz"))[0] == 200
        status, _, raw = await post(server, "/tts/stream", {"text": "Hi", "speaker": "serena"})
        assert status == 401 and json.loads(raw)["error"]["code"] == "unauthorized"
        status, _, body = await post(server, "/tts/stream", {"text": "Hi", "speaker": "serena"},
                                     headers={"Content-Type": "application/json", "Authorization": "Bearer s3cret"})
        assert status == 200 and len(body) > 0
    finally:
        server.stop()


async def test_over_capacity_is_a_503_with_retry_after_before_any_audio(tiny_model_dir, tmp_path):
    from engine_fixtures import TTSServer

    server = TTSServer(tiny_model_dir, tmp_path / "server.log",
                       {"TTS_MAX_ACTIVE_STREAMS": "2", "TTS_QUEUE_TIMEOUT_S": "0.5", "TTS_ADMISSION": "rows"})
    try:
        server.wait_ready()
        long_text = " ".join(["A long reply keeps its row busy for a good while."] * 6)
        results = await asyncio.gather(*[post(server, "/tts/stream", {"text": long_text, "speaker": "serena"})
                                         for _ in range(4)])
        statuses = sorted(status for status, _, _ in results)
        assert statuses == [200, 200, 503, 503]
        for status, headers, body in results:
            if status == 503:
                assert headers["Retry-After"] == "1"
                assert json.loads(body)["error"]["code"] == "over_capacity"
        async with aiohttp.ClientSession() as s, s.get(server.url + "/readyz") as r:
            ready = await r.json()
        assert ready["capacity"] == 2 and ready["capacity_left"] == 2
        async with aiohttp.ClientSession() as s, s.get(server.url + "/metrics") as r:
            assert "tts_engine_rejected_streams 2.0" in await r.text()
    finally:
        server.stop()
