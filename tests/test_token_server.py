"""Token server against the real LiveKit server: claims, joins, refusals, bad input."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from typing import Any

import aiohttp
import jwt
import pytest
from infra_fixtures import REPO_ROOT, LiveKitServer, TokenServer, require, service_env
from livekit import api, rtc

pytestmark = pytest.mark.timeout(120)
HTTP_TIMEOUT = aiohttp.ClientTimeout(total=15)


async def post_token(
    base_url: str, body: Any, headers: dict[str, str] | None = None, raw: bytes | None = None
) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as s:
        data = raw if raw is not None else json.dumps(body).encode()
        hdrs = {"Content-Type": "application/json", **(headers or {})}
        async with s.post(f"{base_url}/api/token", data=data, headers=hdrs) as r:
            assert r.content_type == "application/json", await r.text()
            return r.status, await r.json()


def _room() -> str:
    return "tok-" + uuid.uuid4().hex[:8]


async def _connect(url: str, token: str) -> rtc.Room:
    room = rtc.Room()
    await asyncio.wait_for(room.connect(url, token), 20)
    return room


async def test_token_carries_room_scoped_grants_and_dispatch(
    token_server: TokenServer, livekit_server: LiveKitServer
) -> None:
    room = _room()
    status, body = await post_token(
        token_server.base_url, {"room": room, "identity": "alice", "name": "Alice A."}
    )
    assert status == 200, body
    assert set(body) == {"token", "url", "room", "identity", "expires_at"}
    assert body["url"] == livekit_server.url
    assert (body["room"], body["identity"]) == (room, "alice")
    # signature verifies with the LiveKit server's secret; claims are what we asked for
    claims = jwt.decode(body["token"], livekit_server.api_secret, algorithms=["HS256"])
    assert claims["iss"] == livekit_server.api_key
    assert claims["sub"] == "alice"
    assert claims["name"] == "Alice A."
    assert claims["exp"] == body["expires_at"]
    assert claims["exp"] - claims["nbf"] == 3600
    assert abs(claims["exp"] - (time.time() + 3600)) < 5
    video = claims["video"]
    assert video["room"] == room and video["roomJoin"] is True
    assert video["canPublishSources"] == ["microphone"]
    assert not any(video.get(k) for k in ("roomAdmin", "roomCreate", "roomList", "roomRecord"))
    (dispatch,) = claims["roomConfig"]["agents"]
    assert dispatch["agentName"] == "streamtalk"
    assert json.loads(dispatch["metadata"]) == {"source": "web"}
    # the API secret never appears in what the server hands out
    assert livekit_server.api_secret not in json.dumps(body)


async def test_token_joins_the_real_room_and_dispatches_the_agent(
    token_server: TokenServer, livekit_server: LiveKitServer
) -> None:
    room_name = _room()
    _, body = await post_token(token_server.base_url, {"room": room_name, "identity": "bob"})
    room = await _connect(body["url"], body["token"])
    try:
        assert room.name == room_name
        assert room.local_participant.identity == "bob"
        # the token's room configuration made the server record an agent dispatch
        lk = api.LiveKitAPI(
            livekit_server.http_url, livekit_server.api_key, livekit_server.api_secret
        )
        try:
            dispatches = await asyncio.wait_for(lk.agent_dispatch.list_dispatch(room_name), 10)
        finally:
            await lk.aclose()
        assert [d.agent_name for d in dispatches] == ["streamtalk"]
    finally:
        await room.disconnect()


async def test_two_token_holders_exchange_audio(
    token_server: TokenServer, livekit_server: LiveKitServer
) -> None:
    import numpy as np
    from lk_bots import AudioLevelMonitor, play_pcm

    room_name = _room()
    _, a = await post_token(token_server.base_url, {"room": room_name, "identity": "speaker"})
    _, b = await post_token(token_server.base_url, {"room": room_name, "identity": "listener"})
    listener = await _connect(b["url"], b["token"])
    speaker = await _connect(a["url"], a["token"])
    monitor = AudioLevelMonitor()
    tasks: list[asyncio.Task[None]] = []
    listener.on(
        "track_subscribed",
        lambda track, *_: tasks.append(asyncio.ensure_future(monitor.run(track))),
    )
    source = rtc.AudioSource(48000, 1)
    try:
        track = rtc.LocalAudioTrack.create_audio_track("mic", source)
        await speaker.local_participant.publish_track(
            track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
        )
        t = np.arange(48000 * 3) / 48000
        tone = (8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
        play = asyncio.ensure_future(play_pcm(source, tone, 48000))
        await asyncio.wait_for(monitor.sound_event.wait(), 15)
        play.cancel()
        assert monitor.loud_frames > 0
    finally:
        for task in tasks:
            task.cancel()
        await speaker.disconnect()
        await listener.disconnect()
        await source.aclose()


async def test_livekit_refuses_forged_tampered_and_expired_tokens(
    token_server: TokenServer, livekit_server: LiveKitServer
) -> None:
    room_name = _room()
    _, body = await post_token(token_server.base_url, {"room": room_name, "identity": "eve"})

    forged = (
        api.AccessToken(livekit_server.api_key, "a-secret-the-server-does-not-know-123456")
        .with_identity("eve")
        .with_grants(api.VideoGrants(room_join=True, room=room_name))
        .to_jwt()
    )
    # a valid token whose payload was edited to another room: the signature breaks
    header, payload, sig = body["token"].split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["video"]["room"] = "someone-elses-room"
    edited = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    tampered = f"{header}.{edited}.{sig}"
    # expired five minutes ago (beyond any clock-skew leeway)
    expired = (
        api.AccessToken(livekit_server.api_key, livekit_server.api_secret)
        .with_identity("eve")
        .with_ttl(timedelta(minutes=-5))
        .with_grants(api.VideoGrants(room_join=True, room=room_name))
        .to_jwt()
    )
    cases = (
        ("forged", forged, "signature is invalid"),
        ("tampered", tampered, "signature is invalid"),
        ("expired", expired, "token is expired"),
    )
    for label, token, reason in cases:
        room = rtc.Room()
        with pytest.raises(rtc.ConnectError) as info:
            await asyncio.wait_for(room.connect(livekit_server.url, token), 20)
        message = str(info.value)
        assert "401" in message and reason in message, (label, message)
    # and the genuine token still works
    room = await _connect(body["url"], body["token"])
    await room.disconnect()


BAD_BODIES: list[tuple[str, Any, str, str | None]] = [
    ("array", ["room", "identity"], "invalid_body", None),
    ("missing room", {"identity": "a"}, "missing_field", "room"),
    ("missing identity", {"room": "r"}, "missing_field", "identity"),
    ("empty room", {"room": "", "identity": "a"}, "missing_field", "room"),
    ("oversized room", {"room": "r" * 65, "identity": "a"}, "invalid_field", "room"),
    ("oversized identity", {"room": "r", "identity": "i" * 65}, "invalid_field", "identity"),
    ("space in room", {"room": "my room", "identity": "a"}, "invalid_field", "room"),
    ("slash in room", {"room": "a/b", "identity": "a"}, "invalid_field", "room"),
    ("non-ascii identity", {"room": "r", "identity": "zoë"}, "invalid_field", "identity"),
    ("dot in identity", {"room": "r", "identity": "a.b"}, "invalid_field", "identity"),
    ("numeric identity", {"room": "r", "identity": 123}, "invalid_field", "identity"),
    ("name not string", {"room": "r", "identity": "a", "name": 5}, "invalid_field", "name"),
    ("name too long", {"room": "r", "identity": "a", "name": "n" * 129}, "invalid_field", "name"),
    ("name control char", {"room": "r", "identity": "a", "name": "x\ny"}, "invalid_field", "name"),
]


@pytest.mark.parametrize(
    ("label", "body", "code", "field"), BAD_BODIES, ids=[b[0] for b in BAD_BODIES]
)
async def test_bad_token_requests_get_4xx_json(
    token_server: TokenServer, label: str, body: Any, code: str, field: str | None
) -> None:
    status, resp = await post_token(token_server.base_url, body)
    assert status == 400, resp
    assert resp["error"]["code"] == code
    assert resp["error"].get("field") == field
    assert resp["error"]["message"]


async def test_64_character_names_are_accepted(token_server: TokenServer) -> None:
    status, body = await post_token(
        token_server.base_url, {"room": "R_-9" * 16, "identity": "i" * 64}
    )
    assert status == 200, body


async def test_non_json_and_oversized_bodies(token_server: TokenServer) -> None:
    status, body = await post_token(token_server.base_url, None, raw=b"room=r&identity=a")
    assert status == 400 and body["error"]["code"] == "invalid_json"
    status, body = await post_token(token_server.base_url, None, raw=b"\xff\xfe")
    assert status == 400 and body["error"]["code"] == "invalid_json"
    big = json.dumps({"room": "r", "identity": "a", "pad": "x" * 20_000}).encode()
    status, body = await post_token(token_server.base_url, None, raw=big)
    assert status == 413 and body["error"]["code"] == "body_too_large"


async def test_wrong_methods_and_routes_are_json(token_server: TokenServer) -> None:
    async with aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as s:
        async with s.get(f"{token_server.base_url}/api/token") as r:
            assert r.status == 405
            assert (await r.json())["error"]["code"] == "method_not_allowed"
        async with s.post(f"{token_server.base_url}/api/nothing-here") as r:
            assert r.status == 404
            assert (await r.json())["error"]["code"] == "not_found"


async def test_access_key(start_token_server: Any, livekit_server: LiveKitServer) -> None:
    server = start_token_server(TOKEN_ACCESS_KEY="k3y-for-tests")
    req = {"room": _room(), "identity": "carol"}
    status, body = await post_token(server.base_url, req)
    assert status == 401 and body["error"]["code"] == "access_key_required"
    status, body = await post_token(server.base_url, req, {"X-Access-Key": "nope"})
    assert status == 401 and body["error"]["code"] == "access_key_invalid"
    assert "k3y-for-tests" not in json.dumps(body)
    status, body = await post_token(server.base_url, req, {"X-Access-Key": "k3y-for-tests"})
    assert status == 200 and body["identity"] == "carol"
    async with aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as s:
        async with s.get(f"{server.base_url}/api/config") as r:
            cfg = await r.json()
    assert cfg["access_key_required"] is True
    assert "k3y-for-tests" not in json.dumps(cfg)


async def test_ttl_and_agent_name_from_env(start_token_server: Any) -> None:
    server = start_token_server(TOKEN_TTL_S="120", LIVEKIT_AGENT_NAME="other-agent")
    status, body = await post_token(server.base_url, {"room": _room(), "identity": "dave"})
    assert status == 200
    claims = jwt.decode(body["token"], options={"verify_signature": False})
    assert claims["exp"] - claims["nbf"] == 120
    assert claims["roomConfig"]["agents"][0]["agentName"] == "other-agent"


@pytest.mark.parametrize("ttl", ["0", "86401", "soon"])
def test_invalid_ttl_refuses_to_start(ttl: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "token_server", "--port", "0"],
        cwd=REPO_ROOT,
        env=service_env(TOKEN_TTL_S=ttl),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert "TOKEN_TTL_S" in proc.stderr


async def test_health_page_and_client_library(
    token_server: TokenServer, livekit_server: LiveKitServer
) -> None:
    async with aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as s:
        async with s.get(f"{token_server.base_url}/healthz") as r:
            assert r.status == 200 and (await r.json()) == {"status": "ok"}
        async with s.get(f"{token_server.base_url}/") as r:
            assert r.status == 200 and r.content_type == "text/html"
            page = await r.text()
            assert "<title>streamtalk</title>" in page
        served = page
        for path in ("/app.js", "/turns.js", "/level-worklet.js", "/style.css"):
            async with s.get(f"{token_server.base_url}{path}") as r:
                assert r.status == 200, path
                served += await r.text()
        async with s.get(f"{token_server.base_url}/vendor/livekit-client.umd.js") as r:
            require(r.status != 404, "livekit-client not installed: run scripts/install_node_deps.sh")
            assert r.status == 200
            assert "LivekitClient" in (await r.text())[:5000]
        async with s.get(f"{token_server.base_url}/api/config") as r:
            served += await r.text()
        # no path escapes web/
        async with s.get(f"{token_server.base_url}/%2e%2e/pyproject.toml") as r:
            assert r.status == 404
        async with s.get(f"{token_server.base_url}/..%2ftoken_server%2fapp.py") as r:
            assert r.status == 404
    assert livekit_server.api_secret not in served
