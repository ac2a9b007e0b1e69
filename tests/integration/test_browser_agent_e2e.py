"""A person in the browser talks to the real agent.

Everything real: the LiveKit server (loopback), the dev Omni backend (faster-whisper
ASR, scripted replies), the token server serving web/, the agent worker
(`python -m agent start`, tiny TTS checkpoint on CPU) and headless Chromium whose
fake microphone loops an espeak-ng WAV. The page must connect and publish, show the
agent's scripted answer, hear the agent's audio and measure at least one
end-of-turn -> first agent audio latency, and show the agent by its name, its backend
as ok and its own per-turn latency breakdown, equal to its trace. The screenshot stays in
${STREAMTALK_OUTPUT:-output}/browser/.
"""

from __future__ import annotations

import asyncio
import json
import math
import uuid
from pathlib import Path
from typing import Any

import pytest
from livekit import api
from support.agent_worker import AgentWorker
from support.infra import BrowserEnv, LiveKitServer
from test_web_client import ARTIFACTS, run_web_driver

from streamtalk_common.latency_breakdown import LatencyBreakdown
from streamtalk_common.room_protocol import RECONCILER_METADATA_KEY

pytestmark = pytest.mark.timeout(240)

SCREENSHOT = ARTIFACTS / "web-agent-e2e.png"
# the dev backend's scripted answer to a greeting (tools/omni_dev/responses.json)
SCRIPTED_REPLY = "Hello! I am the streamtalk demo assistant. How can I help you today?"


async def test_browser_user_talks_to_the_real_agent(
    livekit_server: LiveKitServer,
    agent_worker: AgentWorker,
    start_token_server: Any,
    browser_env: BrowserEnv,
    make_speech_wav: Any,
    tmp_path: Path,
) -> None:
    # the page's tokens dispatch the worker started for this session, on the same keys
    token_server = start_token_server(LIVEKIT_AGENT_NAME=agent_worker.agent_name)
    room = "web-agent-" + uuid.uuid4().hex[:8]
    # Chromium loops the fake microphone: one greeting every ~12 s, with quiet long
    # enough for the whole reply. Two measured turns mean the first reply (and its
    # transcript, complete only when the reply ends) is over before the driver stops.
    mic_wav = make_speech_wav(
        "Hello, how are you today?",
        lead_silence_s=0.5,
        tail_silence_s=10.0,
        sample_rate=48000,
    )
    result = await run_web_driver(
        browser_env,
        tmp_path,
        timeout_s=75,
        url=f"{token_server.base_url}/",
        room=room,
        fakeAudioWav=str(mic_wav),
        untilLatencies=2,
        screenshot=str(SCREENSHOT),
    )
    snap = result.get("snapshot") or {}
    diag = json.dumps({k: result.get(k) for k in ("reason", "errorText", "pageErrors", "console")})[
        :4000
    ]
    assert result["ok"], (
        f"page did not complete: {diag}\nagent log:\n{agent_worker.process.log_tail(20)}"
    )
    print(
        "page:",
        json.dumps(
            {
                k: snap.get(k)
                for k in (
                    "connection",
                    "micPublished",
                    "agentIdentity",
                    "agentAudioTracks",
                    "userTurns",
                    "latenciesMs",
                    "stats",
                    "transcripts",
                    "turnLatencies",
                )
            }
        ),
    )
    print("ui:", json.dumps(result.get("ui")))
    print("events:", json.dumps(snap.get("events")))

    ui = result["ui"]
    # connected and publishing the microphone
    assert snap["connection"] == "connected"
    assert snap["micPublished"] is True
    # the real agent joined and its audio track reached the page
    assert snap["agentIdentity"], snap
    assert snap["agentAudioTracks"] >= 1
    # the agent recognised the greeting and gave the scripted answer
    agent_texts = [t["text"] for t in snap["transcripts"] if t["who"] == snap["agentIdentity"]]
    user_texts = [t["text"].lower() for t in snap["transcripts"] if t["who"] == "you"]
    assert any("hello" in t for t in user_texts), snap["transcripts"]
    assert SCRIPTED_REPLY in agent_texts, snap["transcripts"]
    # the finished reply is shown as final (its stream trailer says so), not as interim
    reply = next(t for t in snap["transcripts"] if t["text"] == SCRIPTED_REPLY)
    assert reply["final"] is True, snap["transcripts"]
    assert SCRIPTED_REPLY in ui["transcript"], ui  # what the person sees
    # the page heard the agent and measured end of turn -> first agent audio
    lat = snap["latenciesMs"]
    assert len(lat) >= 1, snap["events"]
    assert all(0 < v < 15000 for v in lat), (lat, snap["events"])
    assert any(e["type"] == "agent_audible" for e in snap["events"]), snap["events"]
    assert int(ui["lat-count"]) >= 1
    assert ui["lat-p50"].endswith("ms")
    assert SCREENSHOT.stat().st_size > 10_000
    assert not result["pageErrors"], result["pageErrors"]
    assert result["leftCleanly"]
    # the agent's own trace: the first reply was played to its end, not cut off by the
    # next loop of the microphone
    events = await agent_worker.wait_trace(room, 1, ["first_audio_published", "reply_end"])
    turn1 = {e["point"] for e in events if e["turn"] == 1}
    assert {"vad_end", "stt_end", "first_audio_published", "reply_end"} <= turn1, sorted(turn1)
    assert "interrupted" not in turn1, sorted(turn1)
    # the agent's name, its backend and its latency breakdown of turn 1, as its trace has it
    assert snap["agentName"] == "streamtalk" and ui["agent-name"] == "streamtalk", ui
    assert snap["backendState"] == "ok" and ui["backend-state"] == "ok", ui
    trace_points = {e["point"]: e["t_mono_ms"] for e in events if e["turn"] == 1}
    expected = LatencyBreakdown.from_points(1, trace_points)
    assert expected is not None and expected.total_ms > 0
    shown = {t["turn"]: t for t in snap["turnLatencies"]}
    assert 1 in shown, snap["turnLatencies"]
    assert shown[1]["segments"] == [[k, v] for k, v in expected.segments_ms().items()]
    shown_total = math.floor(expected.total_ms + 0.5)  # as the page rounds (Math.round)
    assert f"turn 1: {shown_total} ms" in ui["turn-bars"], ui["turn-bars"]


async def test_the_page_says_when_the_agent_is_reconnected_and_back(
    livekit_server: LiveKitServer,
    omni_dev_server: Any,
    start_agent_worker: Any,
    start_token_server: Any,
    browser_env: BrowserEnv,
    make_speech_wav: Any,
    tmp_path: Path,
) -> None:
    """The page joins while no worker of the agent's name is registered (as after a
    LiveKit restart): it shows the reconciler's "reconnecting", then "back", never a
    stale "connected" with no agent and no word."""
    name = "streamtalk-web-rc-" + uuid.uuid4().hex[:6]
    token_server = start_token_server(LIVEKIT_AGENT_NAME=name, TOKEN_RECONCILE_GRACE_S="2")
    room = "web-rc-" + uuid.uuid4().hex[:8]
    mic_wav = make_speech_wav("Hello.", lead_silence_s=0.5, tail_silence_s=10.0, sample_rate=48000)

    async def worker_once_the_page_waits() -> None:
        async with api.LiveKitAPI(livekit_server.url, livekit_server.api_key,
                                  livekit_server.api_secret) as lkapi:
            for _ in range(200):
                rooms = (await lkapi.room.list_rooms(api.ListRoomsRequest(names=[room]))).rooms
                if rooms and RECONCILER_METADATA_KEY in rooms[0].metadata:
                    break
                await asyncio.sleep(0.2)
        await asyncio.to_thread(start_agent_worker, omni_dev_server.base_url, omni_dev_server.model,
                                LIVEKIT_AGENT_NAME=name)

    result, _ = await asyncio.gather(
        run_web_driver(browser_env, tmp_path, timeout_s=120, url=f"{token_server.base_url}/",
                       room=room, fakeAudioWav=str(mic_wav), untilNotice="The agent is back."),
        worker_once_the_page_waits(),
    )
    notices = (result.get("snapshot") or {}).get("notices", [])
    assert result["ok"], (result.get("reason"), notices, result.get("pageErrors"))
    assert any("reconnecting the agent" in n for n in notices), notices
    assert notices[-1] == "The agent is back.", notices
    assert result["snapshot"]["agentIdentity"], result["snapshot"]
    assert not result["pageErrors"], result["pageErrors"]
