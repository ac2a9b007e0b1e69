"""Incremental codec decoding == one full offline decode, for any packet sizes, lengths
well past the 72-frame attention window and the official 300-frame chunking, and for
batches of streams at different positions. The step is capture-safe: state updated in
place, no host reads, shapes independent of position and data, TF32 off. Also the
windowed (approximate) mode."""

from __future__ import annotations

import dataclasses
import itertools

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from tts_engine.codec_checkpoint import build_random_codec_decoder, decoder_config
from tts_engine.codec_stream import (
    CodecStreamDecoder,
    CodecStreamState,
    WindowedCodecDecoder,
    WindowedStreamState,
    decode_in_packets,
)
from tts_engine.model.codec_decoder import CodecDecoder

SPF = 1920
EXACT = 1e-5  # float32 max abs difference allowed between incremental and offline


pytestmark = pytest.mark.usefixtures("single_torch_thread")


@pytest.fixture(scope="module")
def stream(tiny_codec: CodecDecoder) -> CodecStreamDecoder:
    return CodecStreamDecoder(tiny_codec)


def random_codes(batch: int, frames: int, seed: int) -> torch.Tensor:
    return torch.randint(0, 2048, (batch, 16, frames),
                         generator=torch.Generator().manual_seed(seed))


def offline(model: CodecDecoder, codes: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(codes)


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a - b).abs().max().item()


@pytest.mark.parametrize("frames", [1, 13, 100])  # one frame, ~1 s, past the window
@pytest.mark.parametrize("packet", [1, 2, 4])
def test_incremental_equals_offline(tiny_codec: CodecDecoder, stream: CodecStreamDecoder,
                                    frames: int, packet: int) -> None:
    codes = random_codes(1, frames, seed=frames)
    state = stream.new_state()
    pieces = []
    for start in range(0, frames, packet):
        pcm = stream.step(state, codes[:, :, start : start + packet])
        # exactly the new frames' samples
        assert pcm.shape == (1, min(packet, frames - start) * SPF)
        pieces.append(pcm)
    assert state.frames.tolist() == [frames]
    assert max_diff(torch.cat(pieces, -1), offline(tiny_codec, codes)) <= EXACT


def test_long_utterance_over_60_s(tiny_codec: CodecDecoder, stream: CodecStreamDecoder) -> None:
    frames = 800  # 64 s: past the 300-frame chunking of the official decode
    codes = random_codes(1, frames, seed=800)
    ref = offline(tiny_codec, codes)
    schedule = list(itertools.islice(itertools.cycle([1, 2, 3, 5, 8, 4, 1, 7]), 400))
    irregular = schedule[: next(i for i in range(len(schedule))
                                if sum(schedule[: i + 1]) >= frames)]
    irregular.append(frames - sum(irregular))
    for packets in (2, irregular):  # the irregular schedule mixes sizes 1 to 8
        assert max_diff(decode_in_packets(stream, codes, packets), ref) <= EXACT, packets


def test_packets_larger_than_the_window(tiny_codec: CodecDecoder,
                                        stream: CodecStreamDecoder) -> None:
    codes = random_codes(1, 250, seed=250)
    got = decode_in_packets(stream, codes, [100, 1, 149])
    assert max_diff(got, offline(tiny_codec, codes)) <= EXACT


def test_repetitive_codes(tiny_codec: CodecDecoder, stream: CodecStreamDecoder) -> None:
    codes = random_codes(1, 3, seed=3).repeat(1, 1, 40)  # a 3-frame loop, 120 frames
    assert max_diff(decode_in_packets(stream, codes, 2), offline(tiny_codec, codes)) <= EXACT


def test_the_carried_state_matters(tiny_codec: CodecDecoder, stream: CodecStreamDecoder) -> None:
    """Sensitivity check: restarting the state mid-stream is far off (so the exactness
    tests above would notice a state that is carried wrongly)."""
    codes = random_codes(1, 120, seed=120)
    ref = offline(tiny_codec, codes)
    first = decode_in_packets(stream, codes[:, :, :100], 4)
    restarted = decode_in_packets(stream, codes[:, :, 100:], 4)
    assert max_diff(torch.cat([first, restarted], -1), ref) > 1e-2
    # The attention alone reaches further than the convolutions: 40 frames of context
    # still leave a visible error.
    windowed = decode_in_packets(WindowedCodecDecoder(tiny_codec, left_context=40), codes, 4)
    assert max_diff(windowed, ref) > 1e-3


def test_batch_of_streams_at_different_positions(tiny_codec: CodecDecoder,
                                                 stream: CodecStreamDecoder) -> None:
    """Three streams, started at different times (0, 30 and 90 frames in), step together
    as one batch for a while, then continue alone; each equals its own offline decode."""
    codes = [random_codes(1, 110, seed=s) for s in (11, 12, 13)]
    heads = [30, 0, 90]  # frames each stream decodes alone before joining the batch
    together = 8  # frames decoded as a batch, in packets of 2
    outputs: list[list[torch.Tensor]] = [[] for _ in codes]
    states = []
    for i, (c, head) in enumerate(zip(codes, heads, strict=True)):
        state = stream.new_state()
        if head:
            outputs[i].append(stream.step(state, c[:, :, :head]))
        states.append(state)

    batch = CodecStreamState.stack(states)
    assert batch.batch_size == 3 and batch.frames.tolist() == heads
    for k in range(0, together, 2):
        chunk = torch.cat([c[:, :, h + k : h + k + 2] for c, h in zip(codes, heads, strict=True)])
        pcm = stream.step(batch, chunk)  # [3, 2 * 1920]
        for i in range(3):
            outputs[i].append(pcm[i : i + 1])

    for i, state in enumerate(batch.split()):
        rest = codes[i][:, :, heads[i] + together :]
        for start in range(0, rest.shape[2], 3):
            outputs[i].append(stream.step(state, rest[:, :, start : start + 3]))
        assert state.frames.item() == 110
        got = torch.cat(outputs[i], -1)
        assert max_diff(got, offline(tiny_codec, codes[i])) <= EXACT, f"stream {i}"


def test_batched_step_equals_single_steps(stream: CodecStreamDecoder) -> None:
    codes = random_codes(4, 20, seed=20)
    batched = decode_in_packets(stream, codes, 2)
    for i in range(4):
        assert max_diff(batched[i : i + 1], decode_in_packets(stream, codes[i : i + 1], 2)) <= EXACT


def test_step_rejects_mismatched_batches_and_bad_codes(stream: CodecStreamDecoder) -> None:
    state = stream.new_state(batch_size=2)
    with pytest.raises(ValueError, match="3 streams, the state 2"):
        stream.step(state, random_codes(3, 1, seed=0))
    with pytest.raises(ValueError, match=r"\[0, 2048\)"):
        stream.step(state, torch.full((2, 16, 1), 2150))
    assert state.frames.tolist() == [0, 0]  # a refused step leaves the state untouched
    with pytest.raises(ValueError, match="sum to 5"):
        decode_in_packets(stream, random_codes(1, 5, seed=0), [2, 2])


def test_grouped_query_attention_incremental_equals_offline() -> None:
    """Two query heads per KV head (as the `mid` preset has): the KV window is kept
    per KV head and expanded for the attention."""
    gqa = build_random_codec_decoder(dataclasses.replace(decoder_config("tiny"),
                                                         num_key_value_heads=1), seed=5)
    codes = random_codes(1, 90, seed=90)
    assert max_diff(decode_in_packets(CodecStreamDecoder(gqa), codes, 4),
                    offline(gqa, codes)) <= EXACT


# --- capture safety -----------------------------------------------------------------------

# Ops that read a value back to the host or whose output shape depends on data: none may
# run inside a CUDA graph capture.
HOST_READS = ("_local_scalar_dense", "nonzero", "unique", "masked_select", "repeat_interleave",
              "item")


class _OpRecorder(TorchDispatchMode):
    """Every aten op run, with the shapes of its outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[tuple[str, tuple[tuple[int, ...], ...]]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        out = func(*args, **(kwargs or {}))
        leaves = tree_flatten(out)[0]
        self.ops.append((str(func),
                         tuple(tuple(t.shape) for t in leaves if isinstance(t, torch.Tensor))))
        return out


def test_step_updates_state_in_place(stream: CodecStreamDecoder) -> None:
    state = stream.new_state(2)
    before = [(t.data_ptr(), t.shape, t.stride()) for t in state.tensors()]
    for n in (1, 3, 100):  # including a packet longer than the attention window
        stream.step(state, random_codes(2, n, seed=n))
        assert [(t.data_ptr(), t.shape, t.stride()) for t in state.tensors()] == before
    assert state.frames.tolist() == [104, 104]


def test_step_reads_nothing_back_and_its_shapes_do_not_depend_on_data() -> None:
    """The same ops on the same shapes at frame 0 and at frame 97 (attention window
    full, other codes), with no host read: what a CUDA graph replay needs."""
    gqa = build_random_codec_decoder(dataclasses.replace(decoder_config("tiny"),
                                                         num_key_value_heads=1), seed=5)
    dec = CodecStreamDecoder(gqa)
    state = dec.new_state(1)
    traces = []
    for frames_before in (0, 97):
        if frames_before:
            dec.step(state, random_codes(1, frames_before, seed=97))
        with _OpRecorder() as rec:
            dec.step(state, random_codes(1, 2, seed=frames_before), check_codes=False)
        traces.append(rec.ops)
    assert traces[0] == traces[1]
    assert not [op for op, _ in traces[0] if any(bad in op for bad in HOST_READS)]
    with _OpRecorder() as rec:  # the default range check is the one host read
        dec.step(state, random_codes(1, 2, seed=1))
    assert [op for op, _ in rec.ops if "_local_scalar_dense" in op]


def test_zeroed_state_is_a_fresh_stream(tiny_codec: CodecDecoder,
                                        stream: CodecStreamDecoder) -> None:
    state = stream.new_state()
    stream.step(state, random_codes(1, 30, seed=30))
    state.zero_()
    assert state.frames.tolist() == [0] and all(not t.any() for t in state.tensors())
    codes = random_codes(1, 20, seed=31)
    got = torch.cat([stream.step(state, codes[:, :, i : i + 2]) for i in range(0, 20, 2)], -1)
    assert max_diff(got, offline(tiny_codec, codes)) <= EXACT


def test_step_and_offline_decode_run_strict_float32(tiny_codec: CodecDecoder,
                                                    stream: CodecStreamDecoder) -> None:
    """Both paths run with TF32 off and deterministic cuDNN, and restore the caller's
    flags after."""
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul

    def flags() -> tuple[bool, bool, bool]:
        return cudnn.allow_tf32, matmul.allow_tf32, cudnn.deterministic

    seen = []
    hook = tiny_codec.final_conv.conv.register_forward_pre_hook(lambda *_: seen.append(flags()))
    saved = flags()
    try:
        cudnn.allow_tf32 = matmul.allow_tf32 = True
        cudnn.deterministic = False
        stream.step(stream.new_state(), random_codes(1, 1, seed=0))
        offline(tiny_codec, random_codes(1, 1, seed=0))
        assert flags() == (True, True, False)
    finally:
        hook.remove()
        cudnn.allow_tf32, matmul.allow_tf32, cudnn.deterministic = saved
    assert seen == [(False, False, True), (False, False, True)]


# --- windowed mode ----------------------------------------------------------------------


def test_windowed_is_exact_while_the_stream_fits_the_context(tiny_codec: CodecDecoder) -> None:
    codes = random_codes(1, 40, seed=40)
    got = decode_in_packets(WindowedCodecDecoder(tiny_codec, left_context=72), codes, 2)
    assert max_diff(got, offline(tiny_codec, codes)) <= EXACT


def test_windowed_is_approximate_beyond_the_context(tiny_codec: CodecDecoder) -> None:
    codes = random_codes(1, 100, seed=41)
    ref = offline(tiny_codec, codes)
    err = {lc: max_diff(decode_in_packets(WindowedCodecDecoder(tiny_codec, lc), codes, 2), ref)
           for lc in (0, 8, 72)}
    assert err[0] > 1e-2 and err[8] > 1e-3  # too little context: clearly wrong
    assert err[72] < err[8]  # more context, smaller error


def test_windowed_batch_mixes_history_lengths(tiny_codec: CodecDecoder) -> None:
    windowed = WindowedCodecDecoder(tiny_codec, left_context=6)
    codes = random_codes(2, 14, seed=14)
    states = [windowed.new_state(), windowed.new_state()]
    first = windowed.step(states[0], codes[:1, :, :4])  # stream 0 is 4 frames ahead
    batch = WindowedStreamState.stack(states)
    chunk = torch.cat([codes[:1, :, 4:6], codes[1:, :, 0:2]])
    pcm = windowed.step(batch, chunk)
    single = [
        decode_in_packets(windowed, codes[:1, :, :6], [4, 2])[:, 4 * SPF :],
        decode_in_packets(windowed, codes[1:, :, :2], [2]),
    ]
    assert first.shape == (1, 4 * SPF)
    assert max_diff(pcm[:1], single[0]) <= EXACT and max_diff(pcm[1:], single[1]) <= EXACT
    assert batch.frames.tolist() == [6, 2]
