"""The agent's LiveKit plugins against the real parts: the dev Omni backend (real whisper,
scripted replies), the tiny TTS engine on CPU and the Silero VAD. Also the backend-down and
backend-slow paths and a TTS engine without room, which must end in bounded time with a clear
sign, never a hang."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import numpy as np
import pytest
from aiohttp import web
from livekit import rtc
from livekit.agents import llm as lk_llm
from support.infra import OmniDevServer

from agent.config import AgentConfig
from agent.engine_service import load_vad
from agent.events import AgentEvent, EventBus
from agent.gpu_scheduler import GpuScheduler, Lane
from agent.llm import OmniLLM, chat_messages
from agent.omni_client import BackendError, OmniClient
from agent.stt import OmniSTT
from agent.tts import StreamtalkTTS
from streamtalk_common.audio import SAMPLE_RATE, read_wav
from streamtalk_common.net import free_port
from tts_engine.config import EngineConfig
from tts_engine.runtime import TTSEngine

pytestmark = pytest.mark.timeout(180)

STORY = ("Once upon a time, a small voice agent learned to listen carefully. It waited for "
         "people to finish their sentences, then answered quickly and clearly, and it stopped "
         "talking the moment someone interrupted. Everyone agreed it was a very polite agent.")


def recorder() -> tuple[EventBus, list[AgentEvent]]:
    bus = EventBus()
    seen: list[AgentEvent] = []
    bus.subscribe(seen.append)
    return bus, seen


def names(events: list[AgentEvent]) -> list[str]:
    return [e.name for e in events]


def assert_strict_json(events: list[AgentEvent]) -> None:
    """The events' data is plain JSON (no numpy scalars, no NaN, no objects): the metrics
    file holds it as emitted, not its str() (agent/trace.py writes with default=str)."""
    json.dumps([e.payload.as_dict() for e in events], allow_nan=False)


def dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there


def conversation(*turns: tuple[str, str]) -> lk_llm.ChatContext:
    ctx = lk_llm.ChatContext.empty()
    ctx.add_message(role="system", content="You are a test assistant.")
    for role, text in turns:
        ctx.add_message(role=role, content=text)  # type: ignore[arg-type]
    return ctx


async def collect(stream: lk_llm.LLMStream) -> str:
    out = []
    async with stream:
        async for chunk in stream:
            if chunk.delta and chunk.delta.content:
                out.append(chunk.delta.content)
    return "".join(out)


# --------------------------------------------------------------------------- LLM


async def test_chat_streams_tokens_and_reports_the_finish(omni_dev_server: OmniDevServer) -> None:
    client = OmniClient(omni_dev_server.base_url, model=omni_dev_server.model)
    try:
        deltas = [d async for d in client.stream_chat(
            [{"role": "user", "content": "hello"}], max_tokens=150, temperature=0.3,
            first_token_timeout_s=10, idle_timeout_s=10)]
        text = "".join(d.content for d in deltas)
        assert text.startswith("Hello! I am the streamtalk demo assistant.")
        assert len([d for d in deltas if d.content]) > 5  # streamed, not one blob
        assert deltas[-1].finish_reason == "stop" and deltas[-1].completion_tokens
        capped = [d async for d in client.stream_chat(
            [{"role": "user", "content": "hello"}], max_tokens=3, temperature=0.3,
            first_token_timeout_s=10, idle_timeout_s=10)]
        assert capped[-1].finish_reason == "length"
    finally:
        await client.aclose()


async def test_model_name_is_discovered_when_not_configured(omni_dev_server: OmniDevServer) -> None:
    client = OmniClient(omni_dev_server.base_url)
    try:
        assert await client.model() == omni_dev_server.model
    finally:
        await client.aclose()


@pytest.mark.parametrize("continuation", [True, False])
async def test_llm_reply_is_whole_with_and_without_continuation(
    omni_dev_server: OmniDevServer, continuation: bool
) -> None:
    bus, seen = recorder()
    client = OmniClient(omni_dev_server.base_url, model=omni_dev_server.model)
    model = OmniLLM(client, continuation=continuation, first_max_tokens=8, bus=bus)
    try:
        text = await collect(model.chat(chat_ctx=conversation(("user", "tell me a story"))))
    finally:
        await client.aclose()
    assert text == STORY  # the dev backend restarts instead of continuing: no repetition
    done = [e for e in seen if e.name == "llm_done"][0]
    assert done.payload.requests == (2 if continuation else 1)
    assert names(seen)[:2] == ["llm_request", "llm_first_token"]
    first_cap = [e for e in seen if e.name == "llm_request"][0].payload.max_tokens
    assert first_cap == (8 if continuation else 150)


async def test_llm_sends_system_prompt_and_history(omni_dev_server: OmniDevServer) -> None:
    ctx = conversation(("user", "hello"), ("assistant", "Hello! How can I help?"),
                       ("user", "what is the weather"))
    messages = chat_messages(ctx)
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[0]["content"] == "You are a test assistant."
    client = OmniClient(omni_dev_server.base_url, model=omni_dev_server.model)
    try:
        text = await collect(OmniLLM(client, continuation=False).chat(chat_ctx=ctx))
    finally:
        await client.aclose()
    assert "sunny" in text  # answered the last user turn


async def test_llm_backend_down_speaks_a_notice_quickly() -> None:
    bus, seen = recorder()
    client = OmniClient(dead_url(), model="m", max_retries=2, retry_backoff_s=0.05)
    model = OmniLLM(client, backend_down_message="Sorry, the model is down.", bus=bus)
    t0 = time.monotonic()
    try:
        text = await collect(model.chat(chat_ctx=conversation(("user", "hello"))))
    finally:
        await client.aclose()
    assert text == "Sorry, the model is down."
    assert time.monotonic() - t0 < 3
    down = [e for e in seen if e.name == "backend_down"]
    assert down and down[0].payload.component == "llm"
    assert "Connect" in down[0].payload.detail or "connect" in down[0].payload.detail


@pytest.fixture
def silent_backend() -> Iterator[str]:
    """A backend that accepts requests and never answers them."""
    loop = asyncio.new_event_loop()
    started: list[web.AppRunner] = []

    async def hang(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(3600)
        return web.Response()

    async def serve() -> int:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", hang)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        started.append(runner)
        return site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    import threading

    port = loop.run_until_complete(serve())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)


async def test_slow_backend_times_out_instead_of_hanging(silent_backend: str) -> None:
    bus, seen = recorder()
    client = OmniClient(silent_backend, model="m", max_retries=1, retry_backoff_s=0.05)
    model = OmniLLM(client, first_token_timeout_s=0.5, backend_down_message="Too slow.", bus=bus)
    stt = OmniSTT(client, timeout_s=0.5, bus=bus)
    t0 = time.monotonic()
    try:
        text = await collect(model.chat(chat_ctx=conversation(("user", "hello"))))
        llm_s = time.monotonic() - t0
        frame = rtc.AudioFrame(b"\x00\x00" * 16000, 16000, 1, 16000)
        t1 = time.monotonic()
        with pytest.raises(BackendError):
            await stt.transcribe_frame(frame)
        stt_s = time.monotonic() - t1
    finally:
        await client.aclose()
    assert text == "Too slow."
    assert 1.0 <= llm_s < 3.0  # two attempts of 0.5 s, then the notice
    assert 1.0 <= stt_s < 3.0
    assert "for the first token" in [e for e in seen if e.name == "backend_down"][0].payload.detail


# --------------------------------------------------------------------------- STT


@pytest.mark.parametrize("mode", ["chat", "transcriptions"])
async def test_stt_recognizes_a_spoken_turn(omni_dev_server: OmniDevServer, make_speech_wav,
                                            mode: str) -> None:
    pcm, rate = read_wav(make_speech_wav("What is the weather like today?", sample_rate=16000))
    client = OmniClient(omni_dev_server.base_url, model=omni_dev_server.model)
    stt = OmniSTT(client, mode=mode)
    try:
        ev = await stt.recognize(rtc.AudioFrame(pcm.tobytes(), rate, 1, len(pcm)))
    finally:
        await client.aclose()
    assert "weather" in ev.alternatives[0].text.lower()


def frames_of(pcm: np.ndarray, rate: int, ms: int = 20) -> Iterator[rtc.AudioFrame]:
    n = rate * ms // 1000
    for i in range(0, len(pcm) - n + 1, n):
        yield rtc.AudioFrame(pcm[i:i + n].tobytes(), rate, 1, n)


async def feed(stream: object, pcm: np.ndarray, rate: int) -> None:
    for f in frames_of(pcm, rate):
        stream.push_frame(f)  # type: ignore[attr-defined]
        await asyncio.sleep(0.001)


async def events_until(stream: AsyncIterator, want: set[str], timeout_s: float) -> list:
    got: list = []

    async def read() -> None:
        async for ev in stream:
            got.append(ev)
            if want <= {e.type.name for e in got}:
                return

    await asyncio.wait_for(read(), timeout_s)
    return got


def streaming_stt_on_a_greeting(omni_dev_server: OmniDevServer, make_speech_wav):  # noqa: ANN201
    """A streaming OmniSTT on the dev backend, its bus events, and a spoken greeting at 16 kHz."""
    bus, seen = recorder()
    client = OmniClient(omni_dev_server.base_url, model=omni_dev_server.model)
    stt = OmniSTT(client, vad=load_vad(AgentConfig.from_env({})), bus=bus)
    pcm, rate = read_wav(make_speech_wav("Hello there, how are you?", lead_silence_s=0.5,
                                         tail_silence_s=1.0, sample_rate=16000))
    return client, stt, seen, pcm, rate


async def test_streaming_stt_segments_with_the_vad_and_transcribes(
    omni_dev_server: OmniDevServer, make_speech_wav
) -> None:
    client, stt, seen, pcm, rate = streaming_stt_on_a_greeting(omni_dev_server, make_speech_wav)
    stream = stt.stream()
    try:
        feeder = asyncio.create_task(feed(stream, pcm, rate))
        got = await events_until(stream, {"START_OF_SPEECH", "END_OF_SPEECH", "FINAL_TRANSCRIPT"},
                                 30)
        await feeder
    finally:
        await stream.aclose()
        await client.aclose()
    finals = [e for e in got if e.type.name == "FINAL_TRANSCRIPT"]
    assert "hello" in finals[0].alternatives[0].text.lower()
    order = [n for n in names(seen) if n in ("vad_end", "stt_start", "stt_end")]
    assert order == ["vad_end", "stt_start", "stt_end"]


async def test_a_committed_turn_takes_the_words_still_with_the_stt(
    omni_dev_server: OmniDevServer, make_speech_wav
) -> None:
    """An utterance whose transcription is under way when the turn is committed is awaited
    and taken into the turn (agent/conversation_agent.py); it then comes as no transcript of
    its own, which would start a second turn that interrupts the reply."""
    client, stt, seen, pcm, rate = streaming_stt_on_a_greeting(omni_dev_server, make_speech_wav)
    stream = stt.stream()
    finals: list = []

    async def read() -> None:
        async for ev in stream:
            if ev.type.name == "FINAL_TRANSCRIPT":
                finals.append(ev)

    reader = asyncio.create_task(read())
    try:
        feeder = asyncio.create_task(feed(stream, pcm, rate))
        deadline = time.monotonic() + 30
        while "vad_end" not in names(seen) and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        assert "stt_end" not in names(seen)  # still transcribing: the case this is about
        words = await asyncio.wait_for(stt.take_unheard(), 30)
        await feeder
        await asyncio.sleep(0.5)
    finally:
        await stream.aclose()
        await client.aclose()
        reader.cancel()
    assert "hello" in words.lower()
    assert finals == []
    assert await stt.take_unheard() == ""  # taken once


async def test_streaming_stt_survives_a_dead_backend(make_speech_wav) -> None:
    vad = load_vad(AgentConfig.from_env({}))
    bus, seen = recorder()
    client = OmniClient(dead_url(), model="m", max_retries=0)
    stt = OmniSTT(client, vad=vad, bus=bus)
    pcm, rate = read_wav(make_speech_wav("Hello there.", lead_silence_s=0.3, tail_silence_s=0.8,
                                         sample_rate=16000))
    stream = stt.stream()
    try:
        for _ in range(2):  # two turns: the stream keeps working after a failure
            await feed(stream, pcm, rate)
            deadline = time.monotonic() + 15
            while names(seen).count("backend_down") < _ + 1 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        assert names(seen).count("backend_down") == 2
        assert names(seen).count("vad_end") == 2
        assert not stream._task.done()  # type: ignore[attr-defined]
    finally:
        await stream.aclose()
        await client.aclose()


# --------------------------------------------------------------------------- TTS


@pytest.fixture(scope="module")
def engine(tiny_model_dir: Path) -> Iterator[TTSEngine]:
    eng = TTSEngine(EngineConfig.from_env(model_dir=str(tiny_model_dir), device="cpu"))
    try:
        yield eng
    finally:
        eng.close()


async def test_tts_streams_20ms_frames_from_llm_tokens(engine: TTSEngine) -> None:
    bus, seen = recorder()
    tts = StreamtalkTTS(engine, speaker="serena", frame_ms=20, bus=bus)
    stream = tts.stream()
    for tok in ["Hello!", " It is", " **sunny** today 🎉", ", see", " https://x.org."]:
        stream.push_text(tok)
    stream.end_input()
    frames = []
    async with stream:
        async for ev in stream:
            frames.append(ev.frame)
    assert frames and all(f.sample_rate == SAMPLE_RATE and f.num_channels == 1 for f in frames)
    sizes = [f.samples_per_channel for f in frames]
    assert max(sizes) <= SAMPLE_RATE // 50  # frames of at most 20 ms (the sink re-frames exactly)
    assert sizes.count(SAMPLE_RATE // 50) > 0.8 * len(sizes)
    audio = np.concatenate([np.frombuffer(f.data, dtype=np.int16) for f in frames])
    assert len(audio) / SAMPLE_RATE > 1.0 and np.abs(audio).max() > 100
    order = [n for n in names(seen) if n in ("first_segment", "tts_first_packet")]
    assert order == ["first_segment", "tts_first_packet"]
    segs = [e for e in seen if e.name == "tts_segment"]
    assert len(segs) >= 2 and segs[0].payload.chars <= 6  # the starter went first
    lanes = [e.payload.lane for e in seen if e.name == "lane_wait"]
    assert lanes[0] == "fast"
    assert {"lane_wait", "gpu_lanes", "tts_first_packet", "tts_segment"} <= set(names(seen))
    assert_strict_json(seen)


async def test_tts_cancel_stops_the_engine_mid_reply(engine: TTSEngine) -> None:
    bus, seen = recorder()
    tts = StreamtalkTTS(engine, bus=bus)
    stream = tts.stream()
    stream.push_text(STORY)
    stream.end_input()
    got = 0
    async with stream:
        async for _ in stream:
            got += 1
            if got == 10:
                t0 = time.monotonic()
                assert tts.cancel_active() >= 1
                break
    deadline = time.monotonic() + 5
    while "tts_cancelled" not in names(seen) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    cancelled = [e for e in seen if e.name == "tts_cancelled"]
    assert cancelled and cancelled[0].payload.stop_reason == "cancelled"
    assert cancelled[0].payload.engine_stop_ms < 500
    assert time.monotonic() - t0 < 5
    assert tts.active_handles == 0
    assert engine.active_sessions == 0
    # the story was far from done: the engine did not finish it in the background
    assert sum(e.payload.audio_s for e in seen if e.name == "tts_segment") < 10
    assert_strict_json(seen)


async def test_tts_slow_lane_yields_to_another_rooms_first_packet(engine: TTSEngine) -> None:
    scheduler = GpuScheduler()
    bus, seen = recorder()
    tts = StreamtalkTTS(engine, bus=bus, scheduler=scheduler, slow_lane_slack_s=0.0)
    other = scheduler.try_acquire(Lane.FAST)  # another room's first packet in flight
    assert other is not None
    stream = tts.stream()
    stream.push_text("Hi. This is the second segment of a reply.")
    stream.end_input()

    async def release_later() -> None:
        await asyncio.sleep(0.3)
        other.release()

    releaser = asyncio.create_task(release_later())
    async with stream:
        async for _ in stream:
            pass
    await releaser
    lanes = [e.payload for e in seen if e.name == "lane_wait"]
    assert lanes[0].lane == "fast" and lanes[0].wait_ms < 50  # a first segment never waits
    assert scheduler.stats()["fast"]["acquired"] >= 2


async def test_tts_synthesize_and_voice_validation(engine: TTSEngine) -> None:
    tts = StreamtalkTTS(engine)
    with pytest.raises(ValueError, match="valid: .*serena"):
        tts.update_options(speaker="nobody")
    tts.update_options(speaker="Ryan", language="english")
    assert (tts.opts.speaker, tts.opts.language) == ("ryan", "english")
    frames = []
    async with tts.synthesize("Good morning.") as chunked:
        async for ev in chunked:
            frames.append(ev.frame)
    assert sum(f.samples_per_channel for f in frames) > SAMPLE_RATE // 4


async def test_tts_text_with_nothing_speakable_still_answers(engine: TTSEngine) -> None:
    tts = StreamtalkTTS(engine)
    stream = tts.stream()
    stream.push_text("🎉🎉 ***")
    stream.end_input()
    frames = []
    async with stream:
        async for ev in stream:
            frames.append(ev.frame)
    assert frames and all(not np.frombuffer(f.data, dtype=np.int16).any() for f in frames)



@pytest.fixture
def one_stream_engine(tiny_model_dir: Path) -> Iterator[TTSEngine]:
    """An engine with room for one stream (TTS_MAX_ACTIVE_STREAMS=1) that refuses a waiter
    after 0.3 s (TTS_QUEUE_TIMEOUT_S), as a full GPU does."""
    eng = TTSEngine(EngineConfig.from_env(model_dir=str(tiny_model_dir), device="cpu",
                                          max_active_streams=1, queue_timeout_s=0.3))
    try:
        yield eng
    finally:
        eng.close()


async def test_tts_reply_the_engine_has_no_room_for_is_silent_and_the_next_one_spoken(
        one_stream_engine: TTSEngine) -> None:
    engine = one_stream_engine
    other_room = engine.open_stream(engine.make_request(STORY, "serena"))  # ~12 s of audio
    await other_room.admitted()
    bus, seen = recorder()
    tts = StreamtalkTTS(engine, bus=bus)

    async def reply(text: str) -> np.ndarray:
        stream = tts.stream()  # the framework's retries on: none may be needed
        stream.push_text(text)
        stream.end_input()
        async with stream:
            frames = [ev.frame async for ev in stream]
        return np.concatenate([np.frombuffer(f.data, dtype=np.int16) for f in frames])

    assert not (await reply("Hello there. How are you?")).any()
    busy = [e.payload for e in seen if e.name == "backend_busy"]
    assert [(b.segment, b.code) for b in busy] == [(0, "over_capacity")]
    assert "TTS_QUEUE_TIMEOUT_S" in busy[0].detail
    other_room.cancel()
    await other_room.closed()
    assert np.abs(await reply("Hello there. How are you?")).max() > 100
    assert names(seen).count("backend_ok") == 1 and names(seen).count("backend_busy") == 1
    assert engine.stats()["rejected"] == 1
    assert_strict_json(seen)
