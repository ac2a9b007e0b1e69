"""GPU-only checks of the codec decoder's CUDA graphs (skipped without CUDA).

Full released geometry, random weights, float32: the graph replay equals the same
step run eagerly bit for bit, and the streamed PCM is within SNR >= 60 dB of the
float32 offline decode over 300 random frames (past the 72-frame attention window).
Run: python -m pytest -q -s tests/test_gpu_codec.py  (-s prints per-packet times).
"""

from __future__ import annotations

import statistics
import time

import pytest
import torch
from torch import Tensor

from tts_engine.codec_checkpoint import build_random_codec_decoder
from tts_engine.codec_graphs import CodecGraphRunner, CodecGraphStream
from tts_engine.codec_stream import CodecStreamDecoder
from tts_engine.model.codec_decoder import CodecDecoder

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

FRAMES = 300
MIN_SNR_DB = 60.0
SCHEDULE = [1, 2, 2, 1, 2, 2, 2]  # captured sizes only: the graph path replays exactly these


@pytest.fixture(scope="module")
def full() -> CodecDecoder:
    return build_random_codec_decoder("full", seed=0).to("cuda")


@pytest.fixture(scope="module")
def runner(full: CodecDecoder) -> CodecGraphRunner:
    r = CodecGraphRunner(full, slots=2, packet_frames=(1, 2))
    r.capture()
    assert r.captured and r.free_slots == 2
    return r


def packet_sizes(total: int, schedule: list[int]) -> list[int]:
    sizes, i = [], 0
    while sum(sizes) < total:
        sizes.append(min(schedule[i % len(schedule)], total - sum(sizes)))
        i += 1
    return sizes


def codes_for(seed: int, frames: int = FRAMES) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 2048, (1, 16, frames), generator=gen).cuda()


def graph_decode(runner: CodecGraphRunner, stream: CodecGraphStream, codes: Tensor, sizes: list[int]) -> Tensor:
    out, start = [], 0
    for n in sizes:
        out.append(runner.decode(stream, codes[:, :, start : start + n]))
        start += n
    return torch.cat(out, -1)


def eager_decode(model: CodecDecoder, codes: Tensor, sizes: list[int]) -> Tensor:
    dec = CodecStreamDecoder(model)
    state = dec.new_state(1)
    out, start = [], 0
    for n in sizes:
        out.append(dec.step(state, codes[:, :, start : start + n]))
        start += n
    return torch.cat(out, -1)


def snr_db(ref: Tensor, got: Tensor) -> float:
    ref, got = ref.double(), got.double()
    return 10 * torch.log10(ref.pow(2).sum() / (ref - got).pow(2).sum().clamp(min=1e-30)).item()


def test_graph_replay_equals_eager_step_and_offline(full: CodecDecoder, runner: CodecGraphRunner) -> None:
    codes = codes_for(0)
    sizes = packet_sizes(FRAMES, SCHEDULE)
    stream = runner.open()
    graphed = graph_decode(runner, stream, codes, sizes)
    stats = stream.stats.to_dict()
    runner.close(stream)
    assert stats["graph_steps"] == len(sizes) and stats["eager_steps"] == 0, stats
    eager = eager_decode(full, codes, sizes)
    assert torch.equal(graphed, eager), f"max abs diff {(graphed - eager).abs().max().item():.3e}"
    with torch.no_grad():
        offline = full(codes)
    snr = snr_db(offline, graphed)
    print(f"\ngraph vs float32 offline: SNR {snr:.1f} dB, max abs {(graphed - offline).abs().max().item():.2e}")
    assert snr >= MIN_SNR_DB


def test_two_slots_interleaved_split_packets_and_slot_reuse(full: CodecDecoder, runner: CodecGraphRunner) -> None:
    """Two streams on two slots alternate packets; packets of 3 and 5 are split into
    captured sizes (compared with the eager step on the same split). A reused slot
    starts fresh: the same codes give the same PCM bit for bit."""
    codes = [codes_for(1, 120), codes_for(2, 100)]
    sizes = [packet_sizes(120, [3, 2, 5, 1]), packet_sizes(100, [2, 1])]
    split = [[p for n in s for p in runner.plan(n)] for s in sizes]
    streams = [runner.open(), runner.open()]
    outs: list[list[Tensor]] = [[], []]
    pos, k = [0, 0], 0
    while k < max(len(s) for s in sizes):
        for i in (0, 1):
            if k < len(sizes[i]):
                n = sizes[i][k]
                outs[i].append(runner.decode(streams[i], codes[i][:, :, pos[i] : pos[i] + n]))
                pos[i] += n
        k += 1
    first = [torch.cat(o, -1) for o in outs]
    for i in (0, 1):
        assert streams[i].stats.eager_steps == 0
        assert torch.equal(first[i], eager_decode(full, codes[i], split[i])), f"stream {i}"
        runner.close(streams[i])
    again = runner.open()
    assert torch.equal(graph_decode(runner, again, codes[0], sizes[0]), first[0])
    runner.close(again)


def test_replay_time_per_packet(runner: CodecGraphRunner, full: CodecDecoder) -> None:
    """Prints ms per packet, graph vs eager (no assertion on speed)."""
    codes = codes_for(3, 64)
    for n in (1, 2):
        rows = {}
        for mode in ("graph", "eager"):
            # an eager stream is one without a slot: the same step, run eagerly
            stream = runner.open() if mode == "graph" else CodecGraphStream(runner.decoder.new_state(1), None, "timing")
            assert (stream.slot is not None) == (mode == "graph")
            times = []
            for start in range(0, 64, n):
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                runner.decode(stream, codes[:, :, start : start + n])
                torch.cuda.synchronize()
                times.append((time.perf_counter() - t0) * 1000)
            runner.close(stream)
            rows[mode] = statistics.median(times[4:])
        print(f"\npacket {n}: graph {rows['graph']:.2f} ms, eager {rows['eager']:.2f} ms (p50, incl. code range check)")
