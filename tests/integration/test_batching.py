"""Continuous batching on CPU with the tiny checkpoint: streams join and leave a
running batch, every stream stays exact, invariant mode equals solo runs, admission
control queues and refuses, and a failing stream ends alone."""

from __future__ import annotations

import asyncio
import dataclasses
import sys
import time

import numpy as np
import pytest
import torch

import tts_engine.runtime.session as session_module
from tts_engine.config import EngineConfig
from tts_engine.errors import EngineStartError, InvalidText, OverCapacity
from tts_engine.model.layers import KVCache
from tts_engine.runtime import TTSEngine, load_codes
from tts_engine.runtime.engine import GIL_SWITCH_INTERVAL_S
from tts_engine.runtime.stepper import BatchStepper, RowStart

TEXTS = [
    "The first stream is short.",
    "A second stream, a little longer than the first one, joins the batch.",
    "Number three talks about the weather for a while, then stops.",
    "Four!",
    "The fifth stream has a long story to tell: it goes on and on, well past the others, so "
    "that it is still running when the later streams arrive and leave.",
    "Six joins late.",
    "Seven joins later still, with a sentence of medium length.",
    "Eight is the last to join the batch.",
]
SPEAKERS = ["serena", "ryan", "aiden", "sohee", "vivian", "eric", "dylan", "ono_anna"]


def make_engine(model_dir, dump_dir=None, **overrides) -> TTSEngine:
    cfg = EngineConfig.from_env({}, model_dir=str(model_dir), device="cpu", admission="rows",
                                code_dump=int(dump_dir is not None),
                                code_dump_dir=str(dump_dir or ""), **overrides)
    return TTSEngine(cfg, warmup=False)


@pytest.fixture(scope="module")
def batched(tiny_model_dir, tmp_path_factory):
    eng = make_engine(tiny_model_dir, tmp_path_factory.mktemp("dumps"))
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def invariant(tiny_model_dir):
    eng = make_engine(tiny_model_dir, batch_invariant=1)
    yield eng
    eng.close()


def open_together(engine: TTSEngine, requests) -> list:
    """Open streams that all wait before the worker looks at the queue."""
    with engine._lock:
        return [engine.open_stream(r) for r in requests]


async def read_all(handle) -> tuple[np.ndarray, object]:
    """Every packet of a stream to its end: its PCM and final metrics."""
    pcm = np.concatenate([p.pcm async for p in handle])
    return pcm, await handle.closed()


def assert_exact(engine: TTSEngine, pcm: np.ndarray, metrics) -> None:
    """The stream's PCM is one offline decode of exactly the codes it dumped."""
    codes = load_codes(engine.config.resolved_code_dump_dir / f"{metrics.request_id}.npy")
    assert codes.shape[0] == metrics.frames
    offline = engine.model.decode(codes)
    assert pcm.shape == offline.shape and np.abs(pcm - offline).max() <= 1e-5


async def staggered(engine: TTSEngine, requests, gap_s: float = 0.15):
    """Start the requests `gap_s` apart (each joins a running batch); (pcm, metrics) each."""

    async def one(i, req):
        await asyncio.sleep(i * gap_s)
        return await engine.synthesize_pcm(req)

    return await asyncio.gather(*[one(i, r) for i, r in enumerate(requests)])


async def test_eight_streams_join_and_leave_mid_batch_and_stay_exact(batched):
    requests = [batched.make_request(t, s) for t, s in zip(TEXTS, SPEAKERS, strict=True)]
    results = await staggered(batched, requests)
    assert max(m.batch_max for _, m in results) >= 4, "the streams shared steps"
    frames = [m.frames for _, m in results]
    assert len(set(frames)) > 3, "streams of different lengths left at different steps"
    for pcm, m in results:
        assert m.stop_reason == "eos" and m.error is None
        codes = load_codes(batched.config.resolved_code_dump_dir / f"{m.request_id}.npy")
        assert codes.shape[0] == m.frames
        offline = batched.model.decode(codes)  # one offline decode of exactly its codes
        assert pcm.shape == offline.shape and np.abs(pcm - offline).max() <= 1e-5
    assert batched.active_sessions == 0


def test_the_engine_bounds_how_long_its_worker_waits_for_the_gil(batched):
    """The worker gets the GIL back within GIL_SWITCH_INTERVAL_S of asking, whatever the
    consumers' threads do (the interpreter's default is 5 ms)."""
    assert sys.getswitchinterval() <= GIL_SWITCH_INTERVAL_S == 0.0005


async def test_streams_ending_in_the_same_step_free_their_rows_at_once_and_spare_the_rest(
    batched,
):
    """Rows 1, 2, 4 and 6 of eight end at the same frame: the streams kept in rows 5 and 7
    move into rows 1 and 2 in one move of the pool (their KV, buffers and decoder state),
    and every stream stays exact."""
    ending = {1, 2, 4, 6}
    requests = [dataclasses.replace(batched.make_request(TEXTS[4], s),
                                    max_frames=6 if i in ending else 14)
                for i, s in enumerate(SPEAKERS)]
    handles = open_together(batched, requests)
    results = await asyncio.gather(*[read_all(h) for h in handles])
    for i, (pcm, m) in enumerate(results):
        assert m.stop_reason == "max_frames" and m.frames == (6 if i in ending else 14)
        assert m.batch_max == 8
        assert_exact(batched, pcm, m)
    assert batched.active_sessions == 0


async def test_cancel_in_the_middle_of_a_batch_frees_the_row_and_spares_the_rest(batched):
    requests = [batched.make_request(t, "serena") for t in TEXTS[:4]]
    handles = [batched.open_stream(r) for r in requests]
    victim = batched.open_stream(batched.make_request(" ".join(TEXTS), "ryan"))
    got = 0
    async for _ in victim:
        got += 1
        if got == 3:
            victim.cancel()
            break
    metrics = await asyncio.wait_for(victim.closed(), 10)
    assert metrics.stop_reason == "cancelled" and metrics.packets <= got + 1
    for h in handles:
        pcm = np.concatenate([p.pcm async for p in h])
        m = await h.closed()
        assert m.stop_reason == "eos" and len(pcm) == m.frames * 1920
    assert batched.active_sessions == 0


async def test_invariant_mode_concurrent_equals_solo_byte_for_byte(invariant):
    requests = [invariant.make_request(t, s) for t, s in zip(TEXTS[:5], SPEAKERS, strict=False)]
    solo = [(await invariant.synthesize_pcm(r))[0] for r in requests]
    together = await staggered(invariant, requests, gap_s=0.05)
    assert max(m.batch_max for _, m in together) >= 3
    for alone, (pcm, _) in zip(solo, together, strict=True):
        assert np.array_equal(alone, pcm)


async def test_seeded_sampling_is_the_same_solo_and_batched(invariant, batched):
    text = "Sampling with a seed, alone or in company."
    sampled = invariant.make_request(text, "serena", sample=True, seed=1234)
    alone, _ = await invariant.synthesize_pcm(sampled)
    others = [invariant.make_request(t, "ryan") for t in TEXTS[:3]]
    results = await asyncio.gather(invariant.synthesize_pcm(sampled),
                                   *[invariant.synthesize_pcm(r) for r in others])
    assert results[0][1].batch_max >= 2 and np.array_equal(alone, results[0][0])
    greedy, _ = await invariant.synthesize_pcm(invariant.make_request(text, "serena", sample=False))
    assert not np.array_equal(alone[: len(greedy)], greedy[: len(alone)])
    # the offline generator draws the same counter-based noise: the same codes
    _, m = await batched.synthesize_pcm(sampled)
    streamed = load_codes(batched.config.resolved_code_dump_dir / f"{m.request_id}.npy")
    assert np.array_equal(streamed.numpy(), batched.model.generate_codes(sampled)[0].numpy())


async def test_queue_then_refusal_under_a_hand_cap(tiny_model_dir):
    eng = make_engine(tiny_model_dir, max_active_streams=2, queue_timeout_s=0.3)
    try:
        long_text = " ".join(TEXTS)
        handles = open_together(eng, [eng.make_request(long_text, "serena") for _ in range(3)])
        await asyncio.gather(*[h.admitted() for h in handles[:2]])
        with pytest.raises(OverCapacity) as refused:
            await handles[2].admitted()
        assert refused.value.retry_after_s == 1 and refused.value.status == 503
        assert (await handles[2].closed()).stop_reason == "over_capacity"
        for h in handles[:2]:
            h.cancel()
            await h.closed()
        assert eng.stats()["rejected"] == 1
        # with room to wait, the third is queued and served once a row frees
        eng.admission.queue_timeout_s = 60
        short = [eng.make_request(t, "ryan") for t in TEXTS[:3]]
        results = await asyncio.gather(*[eng.synthesize_pcm(r) for r in short])
        waits = sorted(m.queue_wait_ms for _, m in results)
        assert all(m.stop_reason == "eos" for _, m in results)
        assert waits[-1] > 100 and max(m.batch_max for _, m in results) == 2
    finally:
        eng.close()


async def test_a_waiter_the_worker_reaches_after_its_timeout_is_admitted_if_there_is_room(
        tiny_model_dir):
    """The timeout refuses a waiter that found no room, not one the worker was slow to look
    at (a long turn on a busy CPU): with room for two, two are admitted, the third refused."""
    eng = make_engine(tiny_model_dir, max_active_streams=2, queue_timeout_s=0.2)
    try:
        with eng._lock:  # the worker looks at the queue only once all three waited too long
            handles = [eng.open_stream(eng.make_request(t, "ryan")) for t in TEXTS[:3]]
            time.sleep(0.3)
        await asyncio.gather(*[h.admitted() for h in handles[:2]])
        with pytest.raises(OverCapacity):
            await handles[2].admitted()
        results = [await read_all(h) for h in handles[:2]]
        assert [m.stop_reason for _, m in results] == ["eos", "eos"]
        assert eng.stats()["rejected"] == 1
    finally:
        eng.close()


async def test_waiters_prompts_are_built_while_a_step_runs_and_admitted_unchanged(
        tiny_model_dir, tmp_path, monkeypatch):
    """With steps that run on the device after their launch (as on a GPU), the worker builds
    the next waiters' prompts meanwhile; their admission uses those prompts, equal to ones
    built there, and every stream stays exact. A waiter whose prompt fails (injected) is
    refused at its admission, as before."""
    eng = make_engine(tiny_model_dir, tmp_path, max_active_streams=2, queue_timeout_s=60)
    overlapped(monkeypatch, eng)
    monkeypatch.setattr(eng.stepper, "running", lambda: True)
    admitted_prompts = {}
    row_start, prompt = eng._row_start, eng.model.prompt

    def recorded(s):  # noqa: ANN001, ANN202
        admitted_prompts[s.request.text] = s.prompt
        return row_start(s)

    def failing(request):  # noqa: ANN001, ANN202
        if request.text == TEXTS[3]:
            raise InvalidText("injected")
        return prompt(request)

    monkeypatch.setattr(eng, "_row_start", recorded)
    monkeypatch.setattr(eng.model, "prompt", failing)
    try:
        requests = [eng.make_request(t, sp) for t, sp in zip(TEXTS[:5], SPEAKERS, strict=False)]
        handles = open_together(eng, requests)
        results = await asyncio.gather(*[read_all(h) for h in handles[:3] + handles[4:]])
        assert (await handles[3].closed()).stop_reason == "error"
        for pcm, m in results:
            assert m.stop_reason == "eos" and m.batch_max <= 2
            assert_exact(eng, pcm, m)
        ahead = [r for r in requests[2:] if admitted_prompts.get(r.text) is not None]
        assert eng.stats()["prompts_built_ahead"] == len(ahead) >= 1
        for r in ahead:
            assert torch.equal(admitted_prompts[r.text].embeds, eng.model.prompt(r).embeds)
    finally:
        eng.close()


async def test_a_failing_stream_ends_alone_while_the_batch_goes_on(batched, monkeypatch):
    victim_text = "This stream fails on its fifth frame."
    real_add = session_module.StreamSession.add_frame

    def add_frame(self, *args):  # noqa: ANN001, ANN202
        if self.request.text == victim_text and len(self.codes) == 4:
            raise RuntimeError("injected failure")
        return real_add(self, *args)

    monkeypatch.setattr(session_module.StreamSession, "add_frame", add_frame)
    others = [batched.make_request(t, "aiden") for t in TEXTS[:3]]
    results = await asyncio.gather(
        batched.synthesize_pcm(batched.make_request(victim_text, "serena")),
        *[batched.synthesize_pcm(r) for r in others], return_exceptions=True)
    assert isinstance(results[0], RuntimeError) and "injected failure" in str(results[0])
    for pcm, m in results[1:]:
        assert m.stop_reason == "eos" and m.error is None and len(pcm) == m.frames * 1920
        assert m.batch_max >= 2
    assert batched.active_sessions == 0


def test_out_of_memory_while_warming_up_is_a_start_error_that_says_what_to_change(
    tiny_model_dir, monkeypatch
):
    def no_memory(self) -> None:
        raise torch.OutOfMemoryError("CUDA out of memory (injected)")

    monkeypatch.setattr(BatchStepper, "capture", no_memory)
    cfg = EngineConfig.from_env({}, model_dir=str(tiny_model_dir), device="cpu", max_batch=4)
    with pytest.raises(EngineStartError, match="TTS_MAX_BATCH to fewer rows"):
        TTSEngine(cfg)


def test_start_up_calibration_starts_its_rows_at_position_zero(tiny_model_dir):
    """Warm-up leaves its row where its reply ended; calibration steps from there would
    write past the end of a short row (an intermittent start-up failure once)."""
    engine = make_engine(tiny_model_dir, row_positions=64)
    try:
        engine.pool.view(0, engine.pool.rows).pos.fill_(engine.pool.positions - 2)
        engine._calibrate()
        assert engine.capacity >= 1
        assert int(engine.pool.view(0, engine.pool.rows).pos.max()) == 0  # left at rest
    finally:
        engine.close()


def test_the_cold_start_up_admission_does_not_gate_later_ones(tiny_model_dir, monkeypatch):
    """The first admission of a process is slow (a GPU's lazy initialisation); were it
    kept in the admission-cost average, the real-time gate would hold newcomers back
    for the next hundred admissions."""
    prefill = BatchStepper.prefill
    calls = []

    def cold_then_warm(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            time.sleep(1.0)
        return prefill(self, *args, **kwargs)

    monkeypatch.setattr(BatchStepper, "prefill", cold_then_warm)
    engine = TTSEngine(EngineConfig.from_env({}, model_dir=str(tiny_model_dir), device="cpu",
                                             max_batch=4))
    try:
        assert len(calls) == 2  # the warm-up's two admissions
        assert engine.admission.admission_costs().keys() == {1}  # the second, warm one
        assert 0 < engine.admission.admission_ms(1) < 500
    finally:
        engine.close()


async def test_a_burst_of_arrivals_is_prefilled_together_and_joins_in_one_step(
    tiny_model_dir, tmp_path, monkeypatch
):
    """Newcomers waiting together cost the batch one prefill, and their frame 0 comes
    from the next batched step; each stream's audio is still exactly its codes."""
    prefill, groups = BatchStepper.prefill, []

    def recorded(self, start, newcomers):
        groups.append((start, len(newcomers)))
        return prefill(self, start, newcomers)

    monkeypatch.setattr(BatchStepper, "prefill", recorded)
    eng = make_engine(tiny_model_dir, tmp_path)
    try:
        handles = open_together(eng,
                                [eng.make_request(t, s)
                                 for t, s in zip(TEXTS[:6], SPEAKERS, strict=False)])
        results = []
        for h in handles:
            pcm = np.concatenate([p.pcm async for p in h])
            results.append((pcm, await h.closed()))
        assert groups == [(0, 6)]
        assert eng.admission.admission_costs().keys() == {6}  # the gate's plan for a group of 6
        for pcm, m in results:
            assert m.stop_reason == "eos" and m.batch_max == 6
            offline = eng.model.decode(load_codes(eng.config.resolved_code_dump_dir
                                                  / f"{m.request_id}.npy"))
            assert np.abs(pcm - offline).max() <= 1e-5
    finally:
        eng.close()


def test_staged_prefill_shapes_write_the_same_kv_as_a_prefill_of_each_prompt_alone(tiny_model_dir):
    """Prompts padded into a staged shape, a group split until a shape fits: each row's
    KV equals its prompt prefilled alone, and its next input is the prompt's last position."""
    eng = make_engine(tiny_model_dir, row_positions=64)
    try:
        st = eng.stepper
        # 16 newcomers must split
        st.prefill_shapes = [(g, n) for g, n in st.prefill_shapes if g * n <= 128]
        texts = [" ".join(TEXTS[: 1 + i % 4])[: 40 + 9 * i] for i in range(16)]
        newcomers = [RowStart(eng.model.prompt(eng.make_request(t, SPEAKERS[i % 8])), False, 0, 0)
                     for i, t in enumerate(texts)]
        assert len({n.start_position for n in newcomers}) > 4
        st.prefill(0, newcomers)
        rows = eng.pool.view(0, 16)
        for i, n in enumerate(newcomers):
            alone = KVCache.allocate(eng.model.codegen.config.talker.geometry, 1, 64,
                                     eng.model.device, eng.model.codegen.dtype)
            eng.model.codegen.talker.model(n.prompt.embeds[:, : n.start_position], alone)
            p = n.start_position
            assert torch.allclose(rows.k[:, i, :, :p], alone.k[:, 0, :, :p], atol=1e-5)
            assert torch.allclose(rows.v[:, i, :, :p], alone.v[:, 0, :, :p], atol=1e-5)
            assert torch.equal(rows.x[i], n.prompt.embeds[0, -1:]) and int(rows.pos[i]) == p
    finally:
        eng.close()


def test_a_consumer_whose_event_loop_has_closed_does_not_stop_the_engine(batched):
    """The worker hands packets to each consumer's loop; a loop that closed while its
    stream still ran (a client's process shutting down) must not end the worker."""

    async def leave_without_cancelling():
        handle = batched.open_stream(batched.make_request(TEXTS[4], "serena"))
        async for _ in handle:
            return

    asyncio.run(leave_without_cancelling())
    time.sleep(0.5)  # the abandoned stream's last packets and its end meet a closed loop
    pcm, m = asyncio.run(asyncio.wait_for(
        batched.synthesize_pcm(batched.make_request(TEXTS[0], "ryan")), 60))
    assert m.stop_reason == "eos" and len(pcm) == m.frames * 1920


def in_flight_when_finished(monkeypatch, text: str) -> list[bool]:
    """Record, for the stream of `text`, whether a step holding its row was on the device
    when the engine ended it."""
    seen: list[bool] = []
    finish = TTSEngine._finish

    def recorded(self, s, reason, error=None):  # noqa: ANN001, ANN202
        if s.request.text == text and not s.finished:
            seen.append(self._flight is not None and s in self._flight.sessions)
        return finish(self, s, reason, error)

    monkeypatch.setattr(TTSEngine, "_finish", recorded)
    return seen


def overlapped(monkeypatch, engine: TTSEngine) -> None:
    """Packets sent while the next step runs, as on a GPU (a CPU sends them before)."""
    monkeypatch.setattr(engine.stepper, "launch_returns_early", True)


async def test_a_stream_ended_by_silence_while_its_next_step_runs_loses_only_that_unsent_frame(
        tiny_model_dir, tmp_path, monkeypatch):
    """Packets go out while the next step runs, so the silence rule ends a stream whose next
    frame is already being made: that frame is dropped (never sent, not in its codes) and
    its row freed when the step lands; the streams beside it, joining and leaving (EOS, a
    frame limit), stay exact."""
    victim_text = "This stream falls silent after two packets."
    take_packet = session_module.StreamSession.take_packet

    def silent_victim(self, packet_metrics):  # noqa: ANN001, ANN202
        packet = take_packet(self, packet_metrics)
        if self.request.text == victim_text:
            self.silent_packets = self.metrics.packets  # each of its packets counts as silent
        return packet

    monkeypatch.setattr(session_module.StreamSession, "take_packet", silent_victim)
    in_flight = in_flight_when_finished(monkeypatch, victim_text)
    eng = make_engine(tiny_model_dir, tmp_path, silence_packets=2)
    overlapped(monkeypatch, eng)
    try:
        limited = dataclasses.replace(eng.make_request(TEXTS[4], "eric"), max_frames=7)
        requests = [eng.make_request(t, s) for t, s in zip(TEXTS[:3], SPEAKERS, strict=False)]
        handles = [eng.open_stream(r) for r in [*requests, limited]]
        await asyncio.sleep(0.2)  # the victim joins a running batch
        victim = eng.open_stream(eng.make_request(victim_text, "ryan"))
        results = await asyncio.gather(*[read_all(h) for h in [victim, *handles]])
        (pcm, m), others = results[0], results[1:]
        assert m.stop_reason == "silence" and in_flight == [True] and m.batch_max >= 3
        assert m.packets == 2 and m.frames == 2 and len(pcm) == 2 * 1920  # frame 0, then frame 1
        assert_exact(eng, pcm, m)
        assert [o.stop_reason for _, o in others] == ["eos", "eos", "eos", "max_frames"]
        assert others[-1][1].frames == 7
        for pcm, o in others:
            assert_exact(eng, pcm, o)
        # the victim's in-flight frame landed long ago: dropped, not sent late
        assert len(victim.session.codes) == 2 and victim.metrics.packets == 2
        assert eng.active_sessions == 0
        stats = eng.stats()  # a step's period holds its device time (on a CPU, its launch)
        assert stats["steps"] > 0 and stats["step_period_ms_sum"] > stats["step_device_ms_sum"] > 0
        assert stats["step_rows_sum"] > stats["steps"] and stats["step_hand_over_ms_sum"] > 0
    finally:
        eng.close()


async def test_a_stream_whose_packet_fails_while_its_next_step_runs_ends_alone(
    batched, monkeypatch
):
    """An error while sending a packet (the next step already on the device) ends that
    stream only: its packets so far arrived, then the error; its in-flight frame is dropped
    and its row freed; the others stay exact."""
    victim_text = "This stream fails on its second packet."
    take_packet = session_module.StreamSession.take_packet

    def failing_victim(self, packet_metrics):  # noqa: ANN001, ANN202
        if self.request.text == victim_text and self.metrics.packets == 1:
            raise RuntimeError("injected packet failure")
        return take_packet(self, packet_metrics)

    monkeypatch.setattr(session_module.StreamSession, "take_packet", failing_victim)
    in_flight = in_flight_when_finished(monkeypatch, victim_text)
    overlapped(monkeypatch, batched)
    handles = [batched.open_stream(batched.make_request(t, "aiden")) for t in TEXTS[:3]]
    victim = batched.open_stream(batched.make_request(victim_text, "serena"))
    received = []
    with pytest.raises(RuntimeError, match="injected packet failure"):
        async for packet in victim:
            received.append(packet)
    assert in_flight == [True] and [p.frames for p in received] == [1]
    for pcm, m in await asyncio.gather(*[read_all(h) for h in handles]):
        assert m.stop_reason == "eos" and m.batch_max == 4
        assert_exact(batched, pcm, m)
    metrics = await victim.closed()
    assert metrics.stop_reason == "error" and "injected packet failure" in metrics.error
    # frames 0 and 1 (the second packet's one frame); frame 2 dropped
    assert len(victim.session.codes) == 2 and victim.session.row is None
    assert batched.active_sessions == 0


async def test_a_cancel_frees_the_row_within_one_step(batched):
    """Cancelled while the engine sends packets (a step on the device) or while it steps:
    the stream takes part in at most one more step, and its row is free once it closes."""
    handles = [batched.open_stream(batched.make_request(t, "vivian")) for t in TEXTS[:3]]
    victim = batched.open_stream(batched.make_request(" ".join(TEXTS), "ryan"))
    got = 0
    async for _ in victim:
        got += 1
        if got == 3:
            position = victim.session.position  # one more per step it takes part in
            victim.cancel()
            break
    metrics = await asyncio.wait_for(victim.closed(), 10)
    assert metrics.stop_reason == "cancelled" and victim.session.row is None
    assert victim.session.position <= position + 1
    for pcm, m in await asyncio.gather(*[read_all(h) for h in handles]):
        assert m.stop_reason == "eos" and len(pcm) == m.frames * 1920
    assert batched.active_sessions == 0
