"""Token server against the real LiveKit server: claims, joins, refusals, bad input, and
an attacker's attempts (the agent's identity, someone else's, rooms, floods, bad paths)."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import timedelta
from typing import Any

import aiohttp
import jwt
import pytest
import schemathesis
from livekit import api, rtc
from support.infra import (
    LOG_DIR,
    REPO_ROOT,
    LiveKitServer,
    ServiceProcess,
    TokenServer,
    free_port,
    require,
    service_env,
    start_token_server_process,
)
from yarl import URL

from streamtalk_common import stack
from token_server.config import ConfigError, TokenServerConfig

pytestmark = pytest.mark.timeout(120)
HTTP_TIMEOUT = aiohttp.ClientTimeout(total=15)
OTHER_CLIENT = "127.0.0.2"  # another loopback address: another client to the server


def session(source: str | None = None) -> aiohttp.ClientSession:
    """A client session whose connections come from `source` (an address of this machine)."""
    connector = aiohttp.TCPConnector(local_addr=(source, 0) if source else None)
    return aiohttp.ClientSession(timeout=HTTP_TIMEOUT, connector=connector)


async def post_token_full(
    base_url: str,
    body: Any,
    headers: dict[str, str] | None = None,
    raw: bytes | None = None,
    source: str | None = None,
) -> tuple[int, dict[str, Any], dict[str, str]]:
    """POST /api/token: status, JSON body and headers (every answer must be JSON)."""
    async with session(source) as s:
        data = raw if raw is not None else json.dumps(body).encode()
        hdrs = {"Content-Type": "application/json", **(headers or {})}
        async with s.post(f"{base_url}/api/token", data=data, headers=hdrs) as r:
            assert r.content_type == "application/json", await r.text()
            return r.status, await r.json(), dict(r.headers)


async def post_token(
    base_url: str, body: Any, headers: dict[str, str] | None = None, raw: bytes | None = None
) -> tuple[int, dict[str, Any]]:
    status, answer, _ = await post_token_full(base_url, body, headers, raw)
    return status, answer


async def get_json(url: str, source: str | None = None) -> tuple[int, Any, dict[str, str]]:
    async with session(source) as s:
        async with s.get(URL(url, encoded=True)) as r:
            assert r.content_type == "application/json", (url, r.status, await r.text())
            return r.status, await r.json(), dict(r.headers)


async def eventually(
    check: Callable[[], Awaitable[bool]], what: str, timeout_s: float = 10
) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        assert time.monotonic() < deadline, f"not within {timeout_s} s: {what}"
        await asyncio.sleep(0.1)


@pytest.fixture(scope="module")
def unlimited_token_server(livekit_server: LiveKitServer) -> Iterator[TokenServer]:
    """For the tables of bad input, which send more requests than the default rate limit
    allows a minute (the limit has its own test)."""
    server = start_token_server_process(livekit_server, TOKEN_RATE_LIMIT_PER_MIN="0")
    try:
        yield server
    finally:
        server.process.stop()


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
    assert body["room"] == room
    # the identity is the server's: the name asked for, prefixed and made unique
    assert re.fullmatch(r"user-alice-[0-9a-f]{12}", body["identity"]), body["identity"]
    # signature verifies with the LiveKit server's secret; claims are what we asked for
    claims = jwt.decode(body["token"], livekit_server.api_secret, algorithms=["HS256"])
    assert claims["iss"] == livekit_server.api_key
    assert claims["sub"] == body["identity"]
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
        assert room.local_participant.identity == body["identity"]
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
    from support.lk_bots import AudioLevelMonitor, play_pcm

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
    ("array", ["room", "identity"], "invalid_field", None),
    ("empty room", {"room": "", "identity": "a"}, "invalid_field", "room"),
    ("oversized room", {"room": "r" * 65, "identity": "a"}, "invalid_field", "room"),
    ("oversized identity", {"room": "r", "identity": "i" * 65}, "invalid_field", "identity"),
    ("space in room", {"room": "my room", "identity": "a"}, "invalid_field", "room"),
    ("slash in room", {"room": "a/b", "identity": "a"}, "invalid_field", "room"),
    ("dots in room", {"room": "..", "identity": "a"}, "invalid_field", "room"),
    ("non-ascii identity", {"room": "r", "identity": "zoë"}, "invalid_field", "identity"),
    ("dot in identity", {"room": "r", "identity": "a.b"}, "invalid_field", "identity"),
    ("numeric identity", {"room": "r", "identity": 123}, "invalid_field", "identity"),
    ("numeric room", {"room": 7}, "invalid_field", "room"),
    ("name not string", {"room": "r", "identity": "a", "name": 5}, "invalid_field", "name"),
    ("name too long", {"room": "r", "identity": "a", "name": "n" * 129}, "invalid_field", "name"),
    ("name control char", {"room": "r", "identity": "a", "name": "x\ny"}, "invalid_field", "name"),
    ("unknown field", {"room": "r", "admin": True}, "invalid_field", "admin"),
]


@pytest.mark.parametrize(
    ("label", "body", "code", "field"), BAD_BODIES, ids=[b[0] for b in BAD_BODIES]
)
async def test_bad_token_requests_get_4xx_json(
    unlimited_token_server: TokenServer, label: str, body: Any, code: str, field: str | None
) -> None:
    status, resp = await post_token(unlimited_token_server.base_url, body)
    assert status == 400, resp
    assert resp["error"]["code"] == code
    assert resp["error"].get("field") == field
    assert resp["error"]["message"]


async def test_64_character_names_are_accepted(token_server: TokenServer) -> None:
    status, body = await post_token(
        token_server.base_url, {"room": "R_-9" * 16, "identity": "i" * 64}
    )
    assert status == 200, body
    assert body["room"] == "R_-9" * 16


@pytest.mark.parametrize(
    ("label", "raw", "content_type", "status", "code"),
    [
        ("form body", b"room=r&identity=a", "application/json", 400, "invalid_json"),
        ("not UTF-8", b"\xff\xfe", "application/json", 400, "invalid_json"),
        ("unpaired surrogate", b'{"name": "a\\ud800"}', "application/json", 400, "invalid_json"),
        (
            "nested 33 deep",
            b'{"name": ' + b"[" * 33 + b"]" * 33 + b"}",
            "application/json",
            400,
            "invalid_json",
        ),
        (
            "over 16 KiB",
            json.dumps({"name": "x" * 20_000}).encode(),
            "application/json",
            413,
            "body_too_large",
        ),
        ("not JSON at all", b"{}", "text/plain", 415, "unsupported_media_type"),
    ],
)
async def test_non_json_deep_and_oversized_bodies(
    unlimited_token_server: TokenServer,
    label: str,
    raw: bytes,
    content_type: str,
    status: int,
    code: str,
) -> None:
    got, body, _ = await post_token_full(
        unlimited_token_server.base_url, None, {"Content-Type": content_type}, raw
    )
    assert (got, body["error"]["code"]) == (status, code), body


async def test_wrong_methods_and_routes_are_json(token_server: TokenServer) -> None:
    cases = [
        ("GET", "/api/token", 405, "method_not_allowed", ["POST"]),
        ("POST", "/api/config", 405, "method_not_allowed", ["GET", "HEAD"]),
        ("POST", "/index.html", 405, "method_not_allowed", ["GET", "HEAD"]),
        ("POST", "/api/nothing-here", 404, "not_found", None),
    ]
    async with aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as s:
        for method, path, status, code, valid in cases:
            async with s.request(method, f"{token_server.base_url}{path}") as r:
                assert r.status == status, (method, path)
                error = (await r.json())["error"]
            assert error["code"] == code and error.get("valid") == valid, (method, path, error)


async def test_access_key(start_token_server: Any, livekit_server: LiveKitServer) -> None:
    server = start_token_server(TOKEN_ACCESS_KEY="k3y-for-tests")
    req = {"room": _room(), "identity": "carol"}
    status, body = await post_token(server.base_url, req)
    assert status == 401 and body["error"]["code"] == "access_key_required"
    status, body = await post_token(server.base_url, req, {"X-Access-Key": "nope"})
    assert status == 401 and body["error"]["code"] == "access_key_invalid"
    assert "k3y-for-tests" not in json.dumps(body)
    status, body = await post_token(server.base_url, req, {"X-Access-Key": "k3y-for-tests"})
    assert status == 200 and body["identity"].startswith("user-carol-")
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


# keys for servers that refuse to start before they would talk to LiveKit
SOME_KEYS = {"LIVEKIT_API_KEY": "some-key", "LIVEKIT_API_SECRET": "some-secret-" + "x" * 32}


def run_token_server(*args: str, timeout_s: float = 30, **env: str) -> subprocess.CompletedProcess:
    """`python -m token_server ARGS` until it exits (a refusal to start)."""
    return subprocess.run(
        [sys.executable, "-m", "token_server", *args],
        cwd=REPO_ROOT,
        env=service_env(**{**SOME_KEYS, **env}),
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("TOKEN_TTL_S", "0"),
        ("TOKEN_TTL_S", "86401"),
        ("TOKEN_TTL_S", "soon"),
        ("TOKEN_RATE_LIMIT_PER_MIN", "-1"),
        ("TOKEN_RATE_LIMIT_PER_MIN", "lots"),
        ("TOKEN_MAX_CONNECTIONS_PER_CLIENT", "0"),
        ("TOKEN_ALLOW_OPEN", "maybe"),
        ("TOKEN_RECONCILE_GRACE_S", "-1"),
        ("TOKEN_RECONCILE_GRACE_S", "soon"),
        ("TOKEN_RECONCILE_MAX_ATTEMPTS", "0"),
    ],
)
def test_invalid_settings_refuse_to_start(name: str, value: str) -> None:
    proc = run_token_server("--port", "0", **{name: value})
    assert proc.returncode == 2
    assert name in proc.stderr


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
            require(
                r.status != 404, "livekit-client not installed: run scripts/install_node_deps.sh"
            )
            assert r.status == 200
            assert "LivekitClient" in (await r.text())[:5000]
        async with s.get(f"{token_server.base_url}/api/config") as r:
            served += await r.text()
    assert livekit_server.api_secret not in served


# -------------------------------------------------------------------- an attacker's attempts


async def _wait_for_participant(room: rtc.Room, identity: str) -> None:
    async def present() -> bool:
        return identity in room.remote_participants

    await eventually(present, f"{room.local_participant.identity} sees {identity}")


async def test_no_caller_gets_the_agents_identity(
    token_server: TokenServer, livekit_server: LiveKitServer
) -> None:
    room_name = _room()
    agent_identity = "agent-AJ_" + uuid.uuid4().hex[:8]  # how LiveKit names a dispatched agent
    agent = await _connect(
        livekit_server.url, livekit_server.token(agent_identity, room_name, kind="agent")
    )
    attacker = None
    try:
        for asked in (agent_identity, agent_identity.upper(), "Agent", "agent_x", "AGENT-AJ_x"):
            status, body = await post_token(
                token_server.base_url, {"room": room_name, "identity": asked}
            )
            assert status == 400, (asked, body)
            error = body["error"]
            assert (error["code"], error["field"]) == ("invalid_field", "identity"), error
            assert "reserved" in error["message"] and "agent" in error["message"], error
        # the closest an attacker gets: the agent's name inside the server's own prefix
        status, body = await post_token(
            token_server.base_url,
            {"room": room_name, "identity": agent_identity.removeprefix("agent-")},
        )
        assert status == 200 and body["identity"].startswith("user-AJ_"), body
        attacker = await _connect(body["url"], body["token"])
        await _wait_for_participant(attacker, agent_identity)
        await _wait_for_participant(agent, body["identity"])
        assert agent.connection_state == rtc.ConnectionState.CONN_CONNECTED  # not displaced
    finally:
        if attacker is not None:
            await attacker.disconnect()
        await agent.disconnect()


async def test_two_callers_asking_for_one_name_both_stay(token_server: TokenServer) -> None:
    room_name = _room()
    _, first = await post_token(token_server.base_url, {"room": room_name, "identity": "alice"})
    _, second = await post_token(token_server.base_url, {"room": room_name, "identity": "alice"})
    assert first["identity"] != second["identity"]
    assert first["identity"].startswith("user-alice-") and second["identity"].startswith(
        "user-alice-"
    )
    a = await _connect(first["url"], first["token"])
    b = await _connect(second["url"], second["token"])
    try:
        # had the server passed "alice" through, LiveKit would have dropped the first
        # (DUPLICATE_IDENTITY) as the second joined
        await _wait_for_participant(a, second["identity"])
        await _wait_for_participant(b, first["identity"])
        assert a.connection_state == rtc.ConnectionState.CONN_CONNECTED
    finally:
        await b.disconnect()
        await a.disconnect()


async def test_a_room_left_out_is_a_new_random_room(token_server: TokenServer) -> None:
    _, first = await post_token(token_server.base_url, {})
    _, second = await post_token(token_server.base_url, {"identity": "bob"})
    assert first["room"] != second["room"]
    for grant in (first, second):
        assert re.fullmatch(r"room-[A-Za-z0-9_-]{16}", grant["room"]), grant["room"]
        claims = jwt.decode(grant["token"], options={"verify_signature": False})
        assert claims["video"]["room"] == grant["room"]
    assert first["identity"].startswith("user-guest-")
    room = await _connect(first["url"], first["token"])
    try:
        assert room.name == first["room"]
    finally:
        await room.disconnect()


@pytest.mark.parametrize("missing", ["LIVEKIT_API_KEY", "LIVEKIT_API_SECRET"])
def test_without_the_livekit_keys_it_refuses_to_start(missing: str) -> None:
    proc = run_token_server("--port", "0", **{missing: ""})
    assert proc.returncode == 2, proc.stderr
    assert "set LIVEKIT_API_KEY and LIVEKIT_API_SECRET" in proc.stderr
    assert "livekit-keys.yaml" in proc.stderr


@pytest.mark.parametrize("host", ["0.0.0.0", "::"])
def test_a_non_loopback_bind_without_a_key_refuses_to_start(host: str) -> None:
    proc = run_token_server("--host", host, "--port", str(free_port()))
    assert proc.returncode == 2, proc.stderr
    assert f"bind address {host} is not loopback" in proc.stderr
    assert "TOKEN_ACCESS_KEY" in proc.stderr and "TOKEN_ALLOW_OPEN=1" in proc.stderr


@pytest.mark.parametrize(
    ("env", "open_warning"),
    [({"TOKEN_ALLOW_OPEN": "1"}, True), ({"TOKEN_ACCESS_KEY": "a-key-for-tests"}, False)],
    ids=["allow-open", "access-key"],
)
def test_a_non_loopback_bind_starts_when_told_how(env: dict[str, str], open_warning: bool) -> None:
    port = free_port()
    service = stack.token_server(port, "0.0.0.0", **SOME_KEYS, **env)
    proc = ServiceProcess(service, LOG_DIR / f"token-server-{port}.log")
    try:
        proc.wait_healthy()
    finally:
        proc.stop()
    assert ("open token server on 0.0.0.0" in proc.log_path.read_text()) == open_warning


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.10", False),
        ("voice.example.com", False),
    ],
)
def test_which_bind_addresses_count_as_loopback(host: str, loopback: bool) -> None:
    env = {"TOKEN_SERVER_HOST": host, **SOME_KEYS}
    if loopback:
        assert TokenServerConfig.from_env(env).host == host
    else:
        with pytest.raises(ConfigError, match="not loopback"):
            TokenServerConfig.from_env(env)
        assert TokenServerConfig.from_env({**env, "TOKEN_ALLOW_OPEN": "1"}).allow_open


async def test_minting_past_the_rate_limit_is_429_until_retry_after(
    start_token_server: Any,
) -> None:
    server = start_token_server(TOKEN_RATE_LIMIT_PER_MIN="60")  # a burst of 60, then 1 a second
    granted = 0
    for _ in range(300):
        status, body, headers = await post_token_full(server.base_url, {"identity": "flood"})
        if status != 200:
            break
        granted += 1
    assert status == 429, "300 tokens in a row: no rate limit"
    assert granted >= 60, granted
    assert (
        body["error"]["code"] == "rate_limited"
        and "60 token requests a minute" in body["error"]["message"]
    )
    retry_after = int(headers["Retry-After"])
    assert 1 <= retry_after <= 60
    # the limit is per client: another address is served meanwhile
    status, _, _ = await post_token_full(
        server.base_url, {"identity": "other"}, source=OTHER_CLIENT
    )
    assert status == 200
    await asyncio.sleep(retry_after)
    status, body, _ = await post_token_full(server.base_url, {"identity": "flood"})
    assert status == 200, body


async def test_too_many_requests_at_once_from_one_client_get_429(start_token_server: Any) -> None:
    server = start_token_server(TOKEN_MAX_CONNECTIONS_PER_CLIENT="3")
    stalled = []
    for _ in range(3):  # each announces a body and never sends it: the request stays in flight
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(
            b"POST /api/token HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\n\r\n{"
        )
        await writer.drain()
        stalled.append(writer)
    health = f"{server.base_url}/healthz"
    try:
        last: list[Any] = []

        async def refused() -> bool:
            last[:] = await get_json(health)
            return last[0] == 429

        await eventually(refused, "a fourth request refused")
        _, body, headers = last
        assert (
            body["error"]["code"] == "too_many_connections"
            and "at most 3" in body["error"]["message"]
        )
        assert headers["Retry-After"] == "1"
        status, _, _ = await get_json(health, source=OTHER_CLIENT)
        assert status == 200  # another client is not affected
    finally:
        for writer in stalled:
            writer.close()

    async def served() -> bool:
        return (await get_json(health))[0] == 200

    await eventually(served, "requests served again once the stalled ones are gone")
    assert "Traceback" not in server.process.log_path.read_text()


@pytest.mark.parametrize(
    "path",
    [
        "/%00",
        "/app.js%00.html",
        "/..%2f..",
        "/%2e%2e/pyproject.toml",
        "/..%2ftoken_server%2fapp.py",
        "/%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "/" + "a" * 5000,
        "/no-such-file.js",
    ],
    ids=lambda p: p[:40],
)
async def test_bad_static_paths_are_json_404s(token_server: TokenServer, path: str) -> None:
    status, body, _ = await get_json(token_server.base_url + path)
    assert status == 404 and body["error"]["code"] == "not_found", body
    if ".." in URL(path, encoded=True).path:
        assert "/.." in body["error"]["message"]  # the traversal reached the server as such


async def test_the_openapi_document_describes_the_api(token_server: TokenServer) -> None:
    status, doc, _ = await get_json(f"{token_server.base_url}/api/openapi.json")
    assert status == 200
    schema = schemathesis.openapi.from_dict(doc)
    labels = {result.ok().label for result in schema.get_all_operations()}
    assert labels == {"POST /api/token", "GET /api/config", "GET /healthz"}
    token_op = doc["paths"]["/api/token"]["post"]
    assert set(token_op["responses"]) == {"200", "400", "401", "413", "415", "429", "503"}
    request = doc["components"]["schemas"]["TokenRequest"]
    assert request["additionalProperties"] is False and "required" not in request
    room = request["properties"]["room"]["anyOf"][0]
    assert (room["minLength"], room["maxLength"], room["pattern"]) == (1, 64, "^[A-Za-z0-9_-]+$")
