"""The browser client in real headless Chromium against the real LiveKit and token servers.

A fake microphone plays an espeak-ng WAV in a loop; a Python bot in the same room
(tests/support/lk_bots.py) answers each turn. The page must connect, publish, hear the bot,
show its state and transcript, measure latency and reach the bot's stop RPC.
Failures (wrong access key, unreachable LiveKit, refused token, no microphone)
must show a clear message.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from livekit import rtc
from support.infra import (
    OUTPUT_ROOT,
    REPO_ROOT,
    BrowserEnv,
    LiveKitServer,
    TokenServer,
    free_port,
)
from support.lk_bots import ResponderBot

from streamtalk_common.audio import read_wav
from streamtalk_common.latency_breakdown import LatencyBreakdown
from streamtalk_common.room_protocol import LATENCY_TOPIC

DRIVER = REPO_ROOT / "tests" / "support" / "browser" / "drive_web.mjs"
ARTIFACTS = OUTPUT_ROOT / "browser"

pytestmark = pytest.mark.timeout(180)


async def run_web_driver(
    browser_env: BrowserEnv, tmp_path: Path, *, timeout_s: float = 90, **opts: Any
) -> dict[str, Any]:
    """Run the playwright driver; returns its JSON result (never hangs)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    options = {
        "chromium": str(browser_env.chromium),
        "nodeModules": str(browser_env.node_modules),
        "userDataDir": str(tmp_path / f"chromium-profile-{uuid.uuid4().hex[:6]}"),
        "timeoutMs": int((timeout_s - 15) * 1000),
        **opts,
    }
    proc = await asyncio.create_subprocess_exec(
        str(browser_env.node),
        str(DRIVER),
        json.dumps(options),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        pytest.fail(f"browser driver did not finish within {timeout_s}s")
    lines = out.decode(errors="replace").strip().splitlines()
    assert lines, f"driver printed nothing; stderr:\n{err.decode(errors='replace')[-3000:]}"
    result: dict[str, Any] = json.loads(lines[-1])
    (ARTIFACTS / f"{Path(options.get('screenshot') or 'run').stem}.json").write_text(
        json.dumps(result, indent=2)
    )
    return result


async def run_until_error(browser_env: BrowserEnv, tmp_path: Path, base_url: str, screenshot: str,
                          **opts: Any) -> dict[str, Any]:
    """Open the page, join a fresh room and stop at the first error the page shows
    (its text in result["errorText"]); the screenshot goes to ARTIFACTS."""
    result = await run_web_driver(browser_env, tmp_path, timeout_s=60, url=f"{base_url}/",
                                  room=_room(), untilError=True,
                                  screenshot=str(ARTIFACTS / screenshot), **opts)
    assert result["ok"], result
    return result


def _room() -> str:
    return "web-" + uuid.uuid4().hex[:8]


@asynccontextmanager
async def stand_in_agent(
    livekit_server: LiveKitServer, identity: str, room: str, attributes: dict[str, str]
) -> AsyncIterator[tuple[rtc.Room, asyncio.Event]]:
    """A participant of kind agent, named as the agent worker names itself, in `room` with
    `attributes` set; yields it and an event set once it hears the page's microphone."""
    bot = rtc.Room()
    page_mic = asyncio.Event()
    bot.on("track_subscribed", lambda *_: page_mic.set())
    token = livekit_server.token(identity, room, kind="agent", name="streamtalk",
                                 can_update_own_metadata=True)
    await asyncio.wait_for(bot.connect(livekit_server.url, token), 20)
    try:
        await bot.local_participant.set_attributes(attributes)
        yield bot, page_mic
    finally:
        await bot.disconnect()


async def test_page_talks_to_a_bot_and_measures_latency(
    livekit_server: LiveKitServer,
    token_server: TokenServer,
    browser_env: BrowserEnv,
    make_speech_wav: Any,
    tmp_path: Path,
) -> None:
    room = _room()
    # ~1.5 s of speech then 3 s of quiet, looped by Chromium: one user turn per loop
    mic_wav = make_speech_wav(
        "Hello there, what is the weather like today?",
        lead_silence_s=0.3,
        tail_silence_s=3.0,
        sample_rate=48000,
    )
    reply_pcm, reply_rate = read_wav(make_speech_wav("It is sunny.", sample_rate=48000))
    bot_token = livekit_server.token("agent-bot", room, kind="agent", can_update_own_metadata=True)
    bot = ResponderBot(
        livekit_server.url, bot_token, reply_pcm, reply_rate, reply_text="It is sunny today."
    )
    await bot.start()
    try:
        result = await run_web_driver(
            browser_env,
            tmp_path,
            url=f"{token_server.base_url}/",
            room=room,
            fakeAudioWav=str(mic_wav),
            untilLatencies=3,
            clickStop=True,
            screenshot=str(ARTIFACTS / "web-client.png"),
        )
    finally:
        await bot.aclose()

    snap = result.get("snapshot") or {}
    diag = json.dumps({k: result.get(k) for k in ("reason", "errorText", "pageErrors", "console")})[
        :4000
    ]
    assert result["ok"], f"page did not complete: {diag}\nbot: {bot.stats}"
    assert snap["connection"] == "connected"
    assert (snap["room"], result["roomField"]) == (room, room)
    assert snap["identity"].startswith("user-guest-")  # the token server's choice
    assert snap["micPublished"] is True
    assert snap["agentIdentity"] == "agent-bot"
    assert snap["agentAudioTracks"] >= 1
    # the bot heard the browser's microphone and answered turns
    assert bot.stats.heard_frames > 100
    assert bot.stats.replies_started >= 3, bot.stats
    # latency: bot's VAD hangover (0.4 s) + its reply delay (0.3 s) + transport, minus
    # the page's own hangover offset; anything far outside means broken measurement
    lat = snap["latenciesMs"]
    t0 = bot.stats.events[0][0] if bot.stats.events else 0.0
    timeline = {
        "page": snap["events"],
        "bot": [(round(t - t0, 3), what) for t, what in bot.stats.events],
    }
    assert len(lat) >= 3
    # never earlier than the bot can answer, never later than the page's reply timeout
    assert all(300 <= v <= 15000 for v in lat), (lat, timeline)
    assert 300 <= sorted(lat)[len(lat) // 2] <= 3000, (lat, timeline)
    stats = snap["stats"]
    assert stats["p50"] is not None and stats["p95"] is not None
    assert min(lat) <= stats["p50"] <= stats["p95"] <= max(lat)
    ui = result["ui"]
    assert ui["lat-p50"].endswith("ms") and ui["lat-p95"].endswith("ms")
    assert int(ui["lat-count"]) >= 3
    # agent state attributes and transcript reached the page
    assert ui["agent-state"] in ("listening", "thinking", "speaking")
    assert ui["duplex-state"] in ("listening", "thinking", "speaking")
    assert ui["agent-name"] == "agent-bot"  # its token names it after its identity
    assert any("sunny" in t["text"] for t in snap["transcripts"]), snap["transcripts"]
    # the stop button reached the bot's stop_reply RPC and got its answer
    assert snap["stopResults"] and snap["stopResults"][0]["ok"], snap["stopResults"]
    assert snap["stopResults"][0]["response"] == "stopped"
    assert bot.stats.rpc_calls and json.loads(bot.stats.rpc_calls[0])["reason"] == "stop_button"
    assert ui["stop-result"].startswith("stopped")
    assert (ARTIFACTS / "web-client.png").stat().st_size > 10_000
    assert not result["pageErrors"], result["pageErrors"]
    assert result["leftCleanly"]  # the Disconnect button leaves the room


async def test_page_shows_agent_name_paused_state_backend_and_turn_latency(
    livekit_server: LiveKitServer,
    token_server: TokenServer,
    browser_env: BrowserEnv,
    make_speech_wav: Any,
    tmp_path: Path,
) -> None:
    """A participant of kind agent, named as the agent worker names itself, publishes what
    the agent publishes: a paused reply, a backend that is down and two turns' latency
    breakdowns on their data topic (after two packets the page must ignore)."""
    room = _room()
    turns = [LatencyBreakdown(turn=1, stt_ms=561.2, llm_ms=48.0, tts_ms=97.4, publish_ms=1.3),
             LatencyBreakdown(turn=2, stt_ms=402.0, llm_ms=55.5, tts_ms=80.0, publish_ms=2.0)]
    async with stand_in_agent(livekit_server, "agent-AJ_web", room, {
            "lk.agent.state": "speaking", "streamtalk.duplex": "PAUSED",
            "streamtalk.backend": "down: stt: connection refused"}) as (bot, page_mic):
        driver = asyncio.ensure_future(run_web_driver(
            browser_env, tmp_path, url=f"{token_server.base_url}/", room=room,
            fakeAudioWav=str(make_speech_wav("hello", sample_rate=48000)),
            untilUi={"duplex-state": "paused", "agent-name": "streamtalk",
                     "backend-state": "down: stt", "turn-bars": "turn 2"},
            screenshot=str(ARTIFACTS / "web-turn-latency.png")))
        await asyncio.wait_for(page_mic.wait(), 60)  # the page is in the room and publishing
        await asyncio.sleep(1.0)
        bad = [b"not json", json.dumps({"type": "turn_latency", "turn": 3,
                                        "segments_ms": {"stt": "slow"}}).encode()]
        for payload in [*bad, *(t.to_json().encode() for t in turns)]:
            await bot.local_participant.publish_data(payload, reliable=True, topic=LATENCY_TOPIC)
        result = await driver
    snap, ui = result.get("snapshot") or {}, result.get("ui") or {}
    assert result["ok"], (result.get("reason"), ui, result.get("console"))
    assert snap["agentIdentity"] == "agent-AJ_web" and ui["agent-name"] == "streamtalk"
    assert snap["duplexState"] == "PAUSED" and "paused" in ui["duplex-state"]
    assert "interrupt" not in ui["duplex-state"]
    assert ui["backend-state"] == "down: stt: connection refused"
    assert [(t["turn"], t["segments"]) for t in snap["turnLatencies"]] == [
        (t.turn, [[k, v] for k, v in t.segments_ms().items()]) for t in turns]
    bars = ui["turn-bars"]  # newest first, every segment labelled in ms
    assert bars.index("turn 2: 540 ms") < bars.index("turn 1: 708 ms"), bars
    for label in ("stt 561 ms", "llm 48 ms", "tts 97 ms", "publish 1 ms", "stt 402 ms"):
        assert label in bars, bars
    assert sum("ignored a latency packet" in line for line in result["console"]) == 2
    assert not result["pageErrors"], result["pageErrors"]


async def test_page_shows_a_busy_voice_until_the_agent_has_room_again(
    livekit_server: LiveKitServer,
    token_server: TokenServer,
    browser_env: BrowserEnv,
    make_speech_wav: Any,
    tmp_path: Path,
) -> None:
    """The agent's TTS engine has no room (`busy: tts: ...`): the page says so in its notice,
    then the notice goes once the agent publishes `ok`."""
    room = _room()
    async with stand_in_agent(livekit_server, "agent-AJ_busy", room, {
            "streamtalk.duplex": "LISTENING",
            "streamtalk.backend": "busy: tts: no capacity for 2 s (TTS_QUEUE_TIMEOUT_S)"}
            ) as (bot, page_mic):
        driver = asyncio.ensure_future(run_web_driver(
            browser_env, tmp_path, url=f"{token_server.base_url}/", room=room,
            fakeAudioWav=str(make_speech_wav("hello", sample_rate=48000)),
            untilNotice="voice is busy", untilUi={"backend-state": "ok"}))
        await asyncio.wait_for(page_mic.wait(), 60)  # the page is in the room and publishing
        await asyncio.sleep(1.0)
        await bot.local_participant.set_attributes({"streamtalk.backend": "ok"})
        result = await driver
    snap, ui = result.get("snapshot") or {}, result.get("ui") or {}
    assert result["ok"], (result.get("reason"), ui, result.get("console"))
    busy = [n for n in snap["notices"] if "busy" in n]
    assert len(busy) == 1 and "replies are shown as text" in busy[0], snap["notices"]
    assert snap["notice"] == "" and ui["backend-state"] == "ok"
    assert not result["pageErrors"], result["pageErrors"]


async def test_an_empty_room_field_joins_a_new_random_room(
    token_server: TokenServer, browser_env: BrowserEnv, make_speech_wav: Any, tmp_path: Path
) -> None:
    result = await run_web_driver(
        browser_env,
        tmp_path,
        timeout_s=60,
        url=f"{token_server.base_url}/",
        fakeAudioWav=str(make_speech_wav("hello", sample_rate=48000)),
        screenshot=str(ARTIFACTS / "web-random-room.png"),
    )
    assert result["ok"], result
    room = result["snapshot"]["room"]
    assert re.fullmatch(r"room-[A-Za-z0-9_-]{16}", room), room
    assert result["roomField"] == room  # shown, so that others can be invited to it
    assert result["snapshot"]["connection"] == "connected"


async def test_wrong_access_key_shows_clear_message(
    start_token_server: Any, browser_env: BrowserEnv, make_speech_wav: Any, tmp_path: Path
) -> None:
    server = start_token_server(TOKEN_ACCESS_KEY="open-sesame")
    hello = str(make_speech_wav("hello", sample_rate=48000))
    result = await run_until_error(browser_env, tmp_path, server.base_url,
                                   "web-error-access-key.png", accessKey="wrong-key",
                                   fakeAudioWav=hello)
    assert "token server refused" in result["errorText"]
    assert "X-Access-Key header is wrong" in result["errorText"]
    assert result["snapshot"]["connection"] == "failed"


async def test_unreachable_livekit_shows_clear_message(
    start_token_server: Any, browser_env: BrowserEnv, make_speech_wav: Any, tmp_path: Path
) -> None:
    dead_url = f"ws://127.0.0.1:{free_port()}"  # nothing listens there
    server = start_token_server(LIVEKIT_URL=dead_url)
    result = await run_until_error(browser_env, tmp_path, server.base_url,
                                   "web-error-livekit-down.png",
                                   fakeAudioWav=str(make_speech_wav("hello", sample_rate=48000)))
    assert f"Cannot reach the LiveKit server at {dead_url}" in result["errorText"]


async def test_token_refused_by_livekit_shows_clear_message(
    start_token_server: Any, browser_env: BrowserEnv, make_speech_wav: Any, tmp_path: Path
) -> None:
    # signed with a secret the LiveKit server does not know
    server = start_token_server(LIVEKIT_API_SECRET="not-the-server-secret-" + "x" * 20)
    result = await run_until_error(browser_env, tmp_path, server.base_url,
                                   "web-error-token-refused.png",
                                   fakeAudioWav=str(make_speech_wav("hello", sample_rate=48000)))
    assert "refused the token" in result["errorText"]
    assert "eyJ" not in result["errorText"]  # the token itself is not echoed


async def test_missing_microphone_shows_clear_message(
    livekit_server: LiveKitServer,
    token_server: TokenServer,
    browser_env: BrowserEnv,
    tmp_path: Path,
) -> None:
    # no fake capture device: Chromium finds no microphone at all
    result = await run_until_error(browser_env, tmp_path, token_server.base_url,
                                   "web-error-no-microphone.png", fakeAudioWav=None)
    assert "microphone" in result["errorText"].lower()
    snap = result["snapshot"]
    assert snap["micPublished"] is False
    # the room itself stays joined: the user still hears the agent
    assert snap["connection"] == "connected"


async def test_token_server_gone_shows_clear_message(
    start_token_server: Any, browser_env: BrowserEnv, make_speech_wav: Any, tmp_path: Path
) -> None:
    server = start_token_server()
    handshake = tmp_path / "handshake"
    handshake.mkdir()
    driver = asyncio.ensure_future(
        run_web_driver(
            browser_env,
            tmp_path,
            timeout_s=60,
            url=f"{server.base_url}/",
            room=_room(),
            fakeAudioWav=str(make_speech_wav("hello", sample_rate=48000)),
            untilError=True,
            handshakeDir=str(handshake),
            screenshot=str(ARTIFACTS / "web-error-token-server-down.png"),
        )
    )
    for _ in range(300):
        if (handshake / "loaded").exists() or driver.done():
            break
        await asyncio.sleep(0.1)
    server.process.stop()  # the page is loaded; now its server goes away
    (handshake / "go").touch()
    result = await driver
    assert result["ok"], result
    assert "Cannot reach the token server" in result["errorText"]
