"""CodecGraphRunner on CPU: the eager path equals the offline decode; the slot logic
(acquire, reset, release, split packets, fallbacks and their accounting) runs with a
stand-in for CUDA graphs that replays the captured step eagerly on the same static
buffers. tests/test_gpu_codec.py checks real graphs on a GPU."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import Tensor

from tts_engine.codec_checkpoint import build_random_codec_decoder, write_speech_tokenizer
from tts_engine.codec_graphs import CodecGraphRunner, CodecGraphStream
from tts_engine.model.codec_decoder import CodecDecoder, load_codec_decoder

SPF = 1920
EXACT = 1e-5


@pytest.fixture(autouse=True, scope="module")
def _single_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny() -> CodecDecoder:
    return build_random_codec_decoder("tiny", seed=0)


def random_codes(frames: int, seed: int) -> Tensor:
    return torch.randint(0, 2048, (1, 16, frames), generator=torch.Generator().manual_seed(seed))


def offline(model: CodecDecoder, codes: Tensor) -> Tensor:
    with torch.no_grad():
        return model(codes)


def max_diff(a: Tensor, b: Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a - b).abs().max().item()


def decode_all(runner: CodecGraphRunner, stream: CodecGraphStream, codes: Tensor, sizes: list[int]) -> Tensor:
    out, start = [], 0
    for size in sizes:
        pcm = runner.decode(stream, codes[:, :, start : start + size])
        assert pcm.shape == (1, size * SPF)
        out.append(pcm)
        start += size
    assert start == codes.shape[2]
    return torch.cat(out, -1)


class _EagerReplay:
    """Stands in for a CUDA graph: replay() runs the recorded step eagerly and writes its
    result into the same static output buffer, as a replay does."""

    def __init__(self, fn) -> None:  # noqa: ANN001
        self.fn = fn
        self.out = fn()
        self.replays = 0

    def replay(self) -> None:
        self.out.copy_(self.fn())
        self.replays += 1


class FakeGraphRunner(CodecGraphRunner):
    def _can_capture(self) -> bool:
        return True

    def _record_graphs(self, warm, steps):  # noqa: ANN001
        for fn in warm:
            fn()
        graphs = [_EagerReplay(fn) for fn in steps]
        return [(g, g.out) for g in graphs]


# --- CPU: the eager path ------------------------------------------------------------------


def test_cpu_runner_is_eager_and_exact(tiny: CodecDecoder) -> None:
    runner = CodecGraphRunner(tiny, slots=4, packet_frames=(1, 2))
    runner.capture()  # no-op without CUDA
    assert runner.slots == 0 and not runner.captured
    codes = random_codes(100, seed=1)
    stream = runner.open()
    assert stream.slot is None and stream.no_slot_reason == "no_cuda"
    sizes = [1, 2, 4, 3] * 10
    got = decode_all(runner, stream, codes, sizes)
    assert max_diff(got, offline(tiny, codes)) <= EXACT
    runner.close(stream)
    assert stream.stats.to_dict() == {
        "graph_steps": 0, "eager_steps": 40, "graph_replays": 0, "fallback_count": 40,
        "fallback_reasons_topk": {"no_cuda": 40},
    }
    assert runner.fallbacks == {"no_cuda": 40}
    with pytest.raises(ValueError, match="closed"):
        runner.decode(stream, codes[:, :, :1])


def test_runner_checks_codes(tiny: CodecDecoder) -> None:
    runner = CodecGraphRunner(tiny)
    stream = runner.open()
    with pytest.raises(ValueError, match=r"\[0, 2048\)"):
        runner.decode(stream, torch.full((1, 16, 1), 2150))
    with pytest.raises(ValueError, match="batch 1"):
        runner.decode(stream, torch.zeros(2, 16, 1, dtype=torch.long))
    assert stream.state.frames.tolist() == [0]
    # int32 codes work as int64 ones do
    codes = random_codes(3, seed=2)
    assert max_diff(runner.decode(stream, codes.int()), offline(tiny, codes)) <= EXACT


def test_float32_loaded_decoder_takes_the_engines_code_frames(tmp_path: Path) -> None:
    """The engine loads the decoder in float32 whatever the talker's dtype: codes are
    int64 either way. Its packets are frames [16] stacked and transposed: [1, 16, n],
    not contiguous."""
    model = load_codec_decoder(write_speech_tokenizer(tmp_path, "tiny", seed=3), "cpu", torch.float32)
    runner = FakeGraphRunner(model, slots=1, packet_frames=(1, 2))
    runner.capture()
    frames = [random_codes(1, seed=i)[0, :, 0] for i in range(9)]  # int64 [16] each, as the talker gives
    assert frames[0].dtype == torch.int64
    stream = runner.open()
    pcm = []
    for start in range(0, 9, 3):
        packet = torch.stack(frames[start : start + 3]).T[None]  # [1, 16, 3], as engine._emit_packet builds it
        assert not packet.is_contiguous()
        pcm.append(runner.decode(stream, packet))
    assert pcm[0].dtype == torch.float32
    ref = offline(model, torch.stack(frames).T[None].contiguous())
    assert max_diff(torch.cat(pcm, -1), ref) <= EXACT


# --- slot logic, with eager stand-ins for the graphs -----------------------------------


def test_graph_path_equals_offline_with_two_streams_interleaved(tiny: CodecDecoder) -> None:
    runner = FakeGraphRunner(tiny, slots=2, packet_frames=(1, 2))
    runner.capture()
    assert runner.captured and runner.free_slots == 2
    assert all(not t.any() for slot in runner._slots for t in slot.state.tensors())  # warm-up undone
    codes = [random_codes(90, seed=10), random_codes(80, seed=11)]
    streams = [runner.open(), runner.open()]
    assert [s.slot.index for s in streams] == [0, 1] and runner.free_slots == 0
    outs: list[list[Tensor]] = [[], []]
    pos = [0, 0]
    sizes = [[2, 1, 3, 2, 5], [1, 2, 2]]  # 3 = 2 + 1, 5 = 2 + 2 + 1
    k = 0
    while pos[0] < 90 or pos[1] < 80:  # alternate packets of the two streams
        for i in (0, 1):
            total = codes[i].shape[2]
            if pos[i] < total:
                n = min(sizes[i][k % len(sizes[i])], total - pos[i])
                outs[i].append(runner.decode(streams[i], codes[i][:, :, pos[i] : pos[i] + n]))
                pos[i] += n
        k += 1
    for i in (0, 1):
        assert max_diff(torch.cat(outs[i], -1), offline(tiny, codes[i])) <= EXACT, f"stream {i}"
        stats = streams[i].stats.to_dict()
        assert stats["eager_steps"] == 0 and stats["fallback_count"] == 0
        assert stats["graph_steps"] == len(outs[i])
    # stream 0 had packets of 3 and 5 (split), stream 1 only captured sizes
    assert streams[0].stats.graph_replays > streams[0].stats.graph_steps
    assert streams[1].stats.graph_replays == streams[1].stats.graph_steps
    assert runner.plan(3) == (2, 1) and runner.plan(5) == (2, 2, 1) and runner.plan(2) == (2,)


def test_split_packets_replay_captured_sizes(tiny: CodecDecoder) -> None:
    runner = FakeGraphRunner(tiny, slots=1, packet_frames=(2, 1))
    runner.capture()
    stream = runner.open()
    runner.decode(stream, random_codes(5, seed=3))
    slot = stream.slot
    assert (slot.graphs[2].replays, slot.graphs[1].replays) == (2, 1)
    assert stream.stats.to_dict()["graph_replays"] == 3


def test_slot_reset_gives_a_fresh_stream(tiny: CodecDecoder) -> None:
    runner = FakeGraphRunner(tiny, slots=1, packet_frames=(1, 2))
    runner.capture()
    first = runner.open()
    decode_all(runner, first, random_codes(40, seed=4), [2] * 20)
    runner.close(first)
    runner.close(first)  # idempotent
    assert first.slot is None and runner.free_slots == 1
    second = runner.open()
    assert second.slot is not None and second.state.frames.tolist() == [0]
    codes = random_codes(30, seed=5)
    assert max_diff(decode_all(runner, second, codes, [2] * 15), offline(tiny, codes)) <= EXACT


def test_fallbacks_are_exact_and_counted(tiny: CodecDecoder) -> None:
    runner = FakeGraphRunner(tiny, slots=1, packet_frames=(2,))
    early = runner.open()  # before capture: eager on its own state
    assert early.no_slot_reason == "not_captured"
    runner.capture()
    holder = runner.open()
    extra = runner.open()  # the only slot is taken
    assert holder.slot is not None and extra.slot is None and extra.no_slot_reason == "no_free_slot"
    codes = random_codes(24, seed=6)
    ref = offline(tiny, codes)
    sizes = [2, 1, 2, 2, 3, 2, 2, 4, 2, 2, 2]  # odd sizes cannot be split into 2s: eager, on the slot's state
    for s in (early, holder, extra):
        assert max_diff(decode_all(runner, s, codes, sizes), ref) <= EXACT
    assert early.stats.to_dict()["fallback_reasons_topk"] == {"not_captured": 11}
    assert extra.stats.to_dict()["fallback_reasons_topk"] == {"no_free_slot": 11}
    stats = holder.stats.to_dict()
    assert stats == {
        "graph_steps": 9, "eager_steps": 2, "graph_replays": 10, "fallback_count": 2,
        "fallback_reasons_topk": {"packet_frames_not_captured": 2},
    }
    assert runner.fallbacks == {"not_captured": 11, "no_free_slot": 11, "packet_frames_not_captured": 2}


def test_no_slots_or_graphs_off(tiny: CodecDecoder) -> None:
    for kwargs, reason in (({"slots": 0}, "no_graph_slots"), ({"use_graphs": False}, "graphs_disabled")):
        runner = FakeGraphRunner(tiny, **kwargs)
        runner.capture()
        stream = runner.open()
        assert stream.slot is None and stream.no_slot_reason == reason
        codes = random_codes(4, seed=7)
        assert max_diff(decode_all(runner, stream, codes, [4]), offline(tiny, codes)) <= EXACT
        assert stream.stats.reasons == {reason: 1}
