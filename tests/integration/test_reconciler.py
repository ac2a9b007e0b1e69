"""The room reconciler on the real stack: a person is never left with no agent.

Real LiveKit (loopback), the token server that runs the reconciler, the dev
Omni backend and agent workers as subprocesses; a user bot speaks and listens.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time

import pytest
from support.agent_worker import (
    CallBot,
    dispatch_token,
    start_agent_worker_process,
    two_agents_seen,
    unique_room,
)
from support.infra import LiveKitServer, start_livekit_server, start_token_server_process

from streamtalk_common.room_protocol import HISTORY_METADATA_KEY, RECONCILER_METADATA_KEY

pytestmark = pytest.mark.timeout(300)

GRACE_S = 2.0


def agent_name() -> str:
    return f"streamtalk-rc-{os.urandom(3).hex()}"


def user_in_a_room(lk: LiveKitServer, name: str, prefix: str) -> tuple[str, CallBot]:
    """A new room whose join token dispatches agent `name`, and the user bot for it."""
    room = unique_room(prefix)
    return room, CallBot(lk.url, dispatch_token(lk, room, f"user-{prefix}", name))


def question(make_speech_wav):
    return make_speech_wav("What is the weather like today?", lead_silence_s=0.2,
                           tail_silence_s=1.0, sample_rate=48000)


def reconciler_status(bot: CallBot) -> dict:
    meta = json.loads(bot.room.metadata or "{}")
    return meta.get(RECONCILER_METADATA_KEY, {})


def agent_replies(bot: CallBot) -> list[str]:
    """The agent's whole replies the bot was sent (the transcripts of its own speech)."""
    me = bot.room.local_participant.identity
    return [text for identity, _, text in bot.log.transcripts if identity != me]


async def answered(bot: CallBot, wav, timeout_s: float, expect: str | None = "sunny") -> float:
    """Say `wav`; wait for the whole reply, heard (its transcript comes when it ends), with
    `expect` in its text (by default the scripted answer to the question; None: any reply).
    Returns when the bot began to speak."""
    replies = len(agent_replies(bot))
    start, _ = await bot.say(wav)
    await bot.wait_for(lambda: len(agent_replies(bot)) > replies, timeout_s, "a whole spoken reply")
    # its transcript may come before the last of its audio (a jittery media path)
    await bot.wait_for(lambda: bot.reply_rms(since=start) > 0.01, 10, "the reply heard")
    if expect is not None:
        assert expect in agent_replies(bot)[-1], agent_replies(bot)
    return start


async def first_turn(bot: CallBot, wav) -> None:
    """Join, wait for the agent, and have one turn answered."""
    await bot.start()
    await bot.wait_for(lambda: bot.agent_identity is not None, 30, "the agent")
    await answered(bot, wav, 60)


async def test_an_agent_that_could_not_be_dispatched_is_brought_in_later(
    livekit_server: LiveKitServer, start_token_server, omni_dev_server, start_agent_worker,
    make_speech_wav
) -> None:
    """LiveKit dispatched the agent while no worker was registered (as right after LiveKit
    restarted): the job is lost for good unless the reconciler dispatches it again."""
    name = agent_name()
    tokens = start_token_server(LIVEKIT_AGENT_NAME=name, TOKEN_RECONCILE_GRACE_S=str(GRACE_S))
    room, user = user_in_a_room(livekit_server, name, "rc-late")
    try:
        await user.start()
        await asyncio.sleep(1.0)  # the dispatch found no worker of this name
        await user.wait_for(lambda: reconciler_status(user).get("state") == "reconnecting",
                            GRACE_S + 10, "the page told that the agent is being reconnected")
        start_agent_worker(omni_dev_server.base_url, omni_dev_server.model, LIVEKIT_AGENT_NAME=name)
        await user.wait_for(lambda: user.agent_identity is not None, 4 * GRACE_S + 20,
                            "the agent's audio")
        await user.wait_for(lambda: reconciler_status(user).get("state") == "back", 10,
                            "the page told that the agent is back")
        await answered(user, question(make_speech_wav), 60)
        assert f"dispatching {name} again" in tokens.process.log_path.read_text()
        assert not await two_agents_seen(livekit_server, room, 3.0)
    finally:
        await user.aclose()


async def kill_the_serving_worker(user: CallBot, workers: list, room: str) -> float:
    """SIGKILL the worker whose agent serves `room`, wait for another agent there; the
    kill's time."""
    serving = next(w for w in workers if room in w.log_text())
    first_agent = user.agent_identity
    serving.process.proc.send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    await user.wait_for(lambda: user.agent_identity not in (None, first_agent), 60,
                        "another agent in the room")
    return killed_at


async def test_a_killed_worker_is_replaced_by_another_in_the_same_room(
    livekit_server: LiveKitServer, start_token_server, omni_dev_server, start_agent_worker,
    make_speech_wav
) -> None:
    name = agent_name()
    start_token_server(LIVEKIT_AGENT_NAME=name, TOKEN_RECONCILE_GRACE_S=str(GRACE_S))
    workers = [start_agent_worker(omni_dev_server.base_url, omni_dev_server.model,
                                  LIVEKIT_AGENT_NAME=name)
               for _ in range(2)]
    room, user = user_in_a_room(livekit_server, name, "rc-kill")
    wav = question(make_speech_wav)
    try:
        await first_turn(user, wav)
        killed_at = await kill_the_serving_worker(user, workers, room)
        replaced_s = time.monotonic() - killed_at
        print(f"agent replaced {replaced_s:.1f} s after SIGKILL")
        await answered(user, wav, 60)
        assert not await two_agents_seen(livekit_server, room, 3.0)
    finally:
        await user.aclose()


async def test_a_draining_worker_finishes_its_reply_and_another_takes_the_next_turn(
    livekit_server: LiveKitServer, start_token_server, omni_dev_server, start_agent_worker,
    make_speech_wav
) -> None:
    """The worker serving a room gets SIGTERM mid-reply (a deploy, a scale-in): the reply is
    heard to its end, the agent leaves, the worker exits, and the reconciler brings in the
    other worker's agent for the next turn. The two agents never meet."""
    name = agent_name()
    start_token_server(LIVEKIT_AGENT_NAME=name, TOKEN_RECONCILE_GRACE_S=str(GRACE_S))
    workers = [start_agent_worker(omni_dev_server.base_url, omni_dev_server.model,
                                  LIVEKIT_AGENT_NAME=name)
               for _ in range(2)]
    room, user = user_in_a_room(livekit_server, name, "rc-drain")
    story = make_speech_wav("Please tell me a story.", lead_silence_s=0.2, tail_silence_s=1.0,
                            sample_rate=48000)
    watched = asyncio.Event()
    try:
        await user.start()
        await user.wait_for(lambda: user.agent_identity is not None, 30, "the agent")
        first_agent = user.agent_identity
        serving = next(w for w in workers if room in w.log_text())
        _, asked = await user.say(story)
        await user.wait_for(lambda: len(user.loud_times(since=asked)) > 100, 60,
                            "a second of the story")
        serving.process.proc.send_signal(signal.SIGTERM)
        watch = asyncio.create_task(two_agents_seen(livekit_server, room, 120.0, tolerance_s=0.0,
                                                    until=watched))

        # the reply is heard to its last word, then the agent goes and its worker exits
        await user.wait_for(lambda: any("very polite agent" in r for r in agent_replies(user)), 60,
                            "the whole story")
        events = await serving.wait_trace(room, 1, ["reply_end"])
        assert "interrupted" not in {e["point"] for e in events}, events
        await user.wait_for(lambda: first_agent not in user.room.remote_participants, 30,
                            "the draining agent to leave")
        await user.wait_for(lambda: not serving.alive(), 30, "the draining worker to exit")
        assert serving.process.proc.returncode == 0, serving.process.log_tail()
        assert "draining; leaving once the turn under way ends (the agent is speaking)" \
            in serving.log_text()

        await user.wait_for(lambda: user.agent_identity not in (None, first_agent), 60,
                            "the other worker's agent")
        ready_at = time.monotonic()
        reply_end = max(user.loud_times(since=asked))  # the new agent has not spoken yet
        (other,) = [w for w in workers if w is not serving]
        assert room in other.log_text()
        await asyncio.sleep(1.0)  # it subscribes to the user's microphone
        await answered(user, question(make_speech_wav), 60)
        print(f"drain: the other worker's agent ready {ready_at - reply_end:.1f} s after the "
              f"reply ended; the next turn answered {time.monotonic() - reply_end:.1f} s after it")
        await asyncio.sleep(3.0)
        watched.set()
        assert not await watch  # not even for a moment
    finally:
        watched.set()
        await user.aclose()


def room_history(bot: CallBot) -> list[dict]:
    """The conversation history the agent keeps in the room metadata."""
    return json.loads(bot.room.metadata or "{}").get(HISTORY_METADATA_KEY, {}).get("messages", [])


async def test_the_agent_that_replaces_a_killed_one_picks_up_the_conversation(
    livekit_server: LiveKitServer, start_token_server, omni_dev_server, start_agent_worker,
    make_speech_wav
) -> None:
    """The first turn is kept in the room metadata; the worker dies; the new agent's next
    LLM request carries that turn (the dev backend's reply quotes the user's previous turn)."""
    name = agent_name()
    start_token_server(LIVEKIT_AGENT_NAME=name, TOKEN_RECONCILE_GRACE_S=str(GRACE_S))
    workers = [start_agent_worker(omni_dev_server.base_url, omni_dev_server.model,
                                  LIVEKIT_AGENT_NAME=name,
                                  AGENT_GREETING="Hello, I am new here.") for _ in range(2)]
    room, user = user_in_a_room(livekit_server, name, "rc-history")
    try:
        await user.start()
        await user.wait_for(lambda: agent_replies(user), 60, "the first agent's greeting")
        await answered(user, question(make_speech_wav), 60)
        await user.wait_for(lambda: len(room_history(user)) == 3, 10,
                            "the first turn in the room's history")
        greeting, asked, answer = room_history(user)
        assert greeting == {"role": "assistant", "text": "Hello, I am new here."}
        assert asked["role"] == "user" and "weather" in asked["text"].lower()
        assert answer["role"] == "assistant" and "sunny" in answer["text"]
        killed_at = await kill_the_serving_worker(user, workers, room)
        await asyncio.sleep(1.0)  # it subscribes to the user's microphone
        replies = len(agent_replies(user))
        asked_at = time.monotonic()
        await user.say(make_speech_wav("What did I ask you before?", lead_silence_s=0.2,
                                       tail_silence_s=1.0, sample_rate=48000))
        await user.wait_for(lambda: any(r.startswith("Before this you said")
                                        for r in agent_replies(user)[replies:]),
                            60, "the answer to the second turn")
        since_back = agent_replies(user)[replies:]
        assert len(since_back) == 1, f"the new agent greeted: {since_back}"
        assert "weather" in since_back[0].lower(), since_back  # its LLM request held the first turn
        print("the answer that quotes the first turn: whole reply "
              f"{time.monotonic() - asked_at:.1f} s after the question, "
              f"{time.monotonic() - killed_at:.1f} s after SIGKILL")
        await user.wait_for(lambda: len(room_history(user)) == 5, 10,
                            "the second turn in the room's history")
        assert room_history(user)[:3] == [greeting, asked, answer]  # picked up, not repeated
        assert "weather" in room_history(user)[4]["text"].lower()
        print("history in the room metadata: "
              f"{len(json.dumps({'messages': room_history(user)}))} bytes")
    finally:
        await user.aclose()


async def test_livekit_killed_and_restarted_mid_session(
    omni_dev_server, tiny_model_dir, tmp_path, make_speech_wav
) -> None:
    """LiveKit crashes mid-session and comes back on the same ports: the user's SDK
    rejoins, the worker registers again, and the reconciler brings the agent back."""
    lk = start_livekit_server(tmp_path, "livekit-restart")
    name = agent_name()
    tokens = start_token_server_process(lk, LIVEKIT_AGENT_NAME=name,
                                        TOKEN_RECONCILE_GRACE_S=str(GRACE_S))
    worker = start_agent_worker_process(lk, omni_dev_server.base_url, omni_dev_server.model,
                                        tiny_model_dir, tmp_path / "agent-out",
                                        LIVEKIT_AGENT_NAME=name)
    room, user = user_in_a_room(lk, name, "rc-restart")
    wav = question(make_speech_wav)
    try:
        await first_turn(user, wav)
        lk.process = lk.process.killed_and_restarted()
        back_at = time.monotonic()
        watch = asyncio.create_task(two_agents_seen(lk, room, 45.0))
        # the old agent finds its session gone and leaves; a fresh one is dispatched
        first_agent = user.agent_identity
        await user.wait_for(lambda: user.agent_identity not in (None, first_agent), 60,
                            "a fresh agent's audio")
        fresh_s = time.monotonic() - back_at
        await asyncio.sleep(1.0)  # it subscribes to the user's microphone
        await answered(user, wav, 60)
        print(f"a fresh agent's audio {fresh_s:.1f} s after LiveKit was back; "
              f"the next turn's whole reply heard after {time.monotonic() - back_at:.1f} s")
        assert not await watch
    finally:
        await user.aclose()
        for service in (worker.process, tokens.process, lk.process):
            service.stop()
