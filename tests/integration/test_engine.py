"""TTSEngine in process: streaming == offline, cancellation, debug aids
(batching: test_batching.py)."""

from __future__ import annotations

import asyncio
import gc
import subprocess
import sys
import weakref

import numpy as np
import pytest

import tts_engine.runtime.session as session_module
from streamtalk_common.audio import from_pcm16, read_wav
from tts_engine.config import ConfigValueError, EngineConfig
from tts_engine.runtime import TTSEngine, load_codes
from tts_engine.runtime.code_dump import read_dump_meta


@pytest.fixture(scope="module")
def engine(tiny_model_dir, tmp_path_factory):
    dump = tmp_path_factory.mktemp("dumps")
    eng = TTSEngine(EngineConfig.from_env(
        {}, model_dir=str(tiny_model_dir), device="cpu", code_dump=1, code_dump_dir=str(dump)))
    yield eng
    eng.close()


async def read_then_cancel(handle, packets: int) -> int:  # noqa: ANN001
    """Read `packets` packets, cancel, wait until the engine has let the session go."""
    received = 0
    async for _ in handle:
        received += 1
        if received == packets:
            handle.cancel()
            break
    await asyncio.wait_for(handle.closed(), 10)
    return received


async def test_stream_equals_offline_decode(engine):
    req = engine.make_request("Streaming must equal the offline decode.", "ryan", "english")
    pcm, metrics = await engine.synthesize_pcm(req)
    # the batched step (batch 1) makes the codes the offline generator makes
    codes, reason = engine.model.generate_codes(req)
    dumped = load_codes(engine.config.resolved_code_dump_dir / f"{metrics.request_id}.npy")
    assert np.array_equal(dumped.numpy(), codes.numpy()) and reason == metrics.stop_reason == "eos"
    offline = engine.model.decode(codes)
    assert pcm.shape == offline.shape
    assert np.abs(pcm - offline).max() <= 1e-5
    assert metrics.ttfa_ms is not None and metrics.ttfa_ms < metrics.wall_ms


async def test_cancel_stops_within_one_packet(engine):
    req = engine.make_request(" ".join(["A long answer nobody will hear to the end."] * 6),
                              "serena")
    handle = engine.open_stream(req, packet_tokens=2)
    received = await read_then_cancel(handle, 2)
    assert handle.metrics.stop_reason == "cancelled"
    # Work stops before the next frame: at most one packet beyond what was read is made.
    assert handle.metrics.packets <= received + 1
    assert engine.active_sessions == 0


async def test_a_finished_or_cancelled_stream_dies_without_the_garbage_collector(engine):
    """A request's objects form no cycle: once its consumer lets go, they are freed by
    reference counting, not left for a full collection of the oldest generation."""
    req = engine.make_request("Gone as soon as it is read.", "ryan", "english")
    gc.disable()
    try:
        handles = [engine.open_stream(req), engine.open_stream(req)]
        async for _ in handles[0]:
            pass
        await read_then_cancel(handles[1], 1)
        await asyncio.wait_for(handles[0].closed(), 10)
        await asyncio.sleep(0.2)  # the worker's turn that let them go is over
        refs = [weakref.ref(x) for h in handles for x in (h, h.session)]
        del handles
        assert [ref() for ref in refs] == [None] * 4
    finally:
        gc.enable()


async def test_code_dump_replays_to_the_same_audio(engine, tmp_path, tiny_model_dir):
    req = engine.make_request("Dump my codes please.", "sohee", "korean")
    pcm, metrics = await engine.synthesize_pcm(req)
    dump = engine.config.resolved_code_dump_dir / f"{metrics.request_id}.npy"
    assert load_codes(dump).shape == (metrics.frames, 16)
    meta = read_dump_meta(dump)
    assert meta["stop_reason"] == metrics.stop_reason and meta["text"] == "Dump my codes please."
    assert meta["text_tokens"] > 0 and meta["frames"] == metrics.frames
    out = tmp_path / "replay.wav"
    subprocess.run([sys.executable, "-m", "tts_engine", "decode-codes", str(dump),
                    "--model-dir", str(tiny_model_dir), "--out", str(out), "--device", "cpu"],
                   check=True, capture_output=True, timeout=120)
    replay = from_pcm16(read_wav(out)[0])
    assert replay.shape == pcm.shape and np.abs(replay - pcm).max() <= 1.5 / 32767


def test_golden_config_is_enforced():
    with pytest.raises(ConfigValueError, match="TTS_CODEGEN_GROUP_PARALLEL"):
        EngineConfig.from_env({"TTS_CODEGEN_GROUP_PARALLEL": "1"})
    with pytest.raises(ConfigValueError, match="valid: incremental, windowed"):
        EngineConfig.from_env({"TTS_DEEP_STREAM_DECODE_MODE": "magic"})
    with pytest.raises(ConfigValueError, match="not an integer"):
        EngineConfig.from_env({"TTS_DEEP_STREAM_PACKET_TOKENS": "two"})
    cfg = EngineConfig.from_env({})
    assert (cfg.packet_tokens, cfg.left_context, cfg.decode_mode,
            cfg.seed) == (2, 72, "incremental", 42)


async def test_seeded_sampling_is_reproducible_and_differs_from_greedy(engine):
    text = "Sampling with a seed."
    a, _ = await engine.synthesize_pcm(engine.make_request(text, "serena", sample=True, seed=7))
    b, _ = await engine.synthesize_pcm(engine.make_request(text, "serena", sample=True, seed=7))
    c, _ = await engine.synthesize_pcm(engine.make_request(text, "serena", sample=True, seed=8))
    g, _ = await engine.synthesize_pcm(engine.make_request(text, "serena", sample=False))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c) and not np.array_equal(a[: len(g)], g[: len(a)])


async def test_silence_early_stop(tiny_model_dir, monkeypatch):
    """TTS_DEEP_STREAM_SILENCE_PACKETS=N stops a stream after N silent packets, not before."""
    eng = TTSEngine(EngineConfig.from_env({}, model_dir=str(tiny_model_dir), device="cpu",
                                          silence_packets=2),
                    warmup=False)
    try:
        text = "Loud and clear, for a good while longer than two packets."
        _, audible = await eng.synthesize_pcm(eng.make_request(text, "serena"))
        # the tiny voice is never silent
        assert audible.stop_reason == "eos" and audible.packets > 2
        # Count every packet as silent: the stream must end after exactly two.
        monkeypatch.setattr(session_module, "SILENCE_RMS", float("inf"))
        _, silent = await eng.synthesize_pcm(eng.make_request(text, "serena"))
        assert silent.stop_reason == "silence" and silent.packets == 2
    finally:
        eng.close()


async def test_windowed_decode_mode(tiny_model_dir):
    """The windowed decode mode (approximate, kept for comparison: docs/CODEC_STREAMING.md)
    streams the same length as the exact mode, approximately the same audio."""
    eng = TTSEngine(EngineConfig.from_env({}, model_dir=str(tiny_model_dir), device="cpu",
                                          decode_mode="windowed", left_context=72), warmup=False)
    try:
        req = eng.make_request("Windowed decoding, packet by packet.", "ryan", "english")
        pcm, metrics = await eng.synthesize_pcm(req)
        offline = eng.model.decode(eng.model.generate_codes(req)[0])
        assert metrics.stop_reason == "eos"
        assert pcm.shape == offline.shape
        # Exact while the utterance fits in the 72-frame window (this one does).
        assert np.abs(pcm - offline).max() <= 1e-5
    finally:
        eng.close()
