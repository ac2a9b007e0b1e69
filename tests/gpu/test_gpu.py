"""GPU-only checks (run on a CUDA machine; CI has no GPU and skips them).

The batch step's CUDA graphs must reproduce the same parts run eagerly bit for
bit at several batch buckets (with the compiled layers of TTS_COMPILE=1 too, and in
batch-invariant mode), and streams must equal their solo runs in batch-invariant
mode, whose Triton kernels give each row its solo result at the 0.6B's shapes.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tts_engine.config import EngineConfig
from tts_engine.errors import EngineStartError
from tts_engine.runtime import TTSEngine
from tts_engine.runtime.stepper import RowStart

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

TEXTS = ["Hello there, how are you?",
         "A somewhat longer sentence that runs for more frames than the first.", "Third.",
         "The fourth stream talks a while about nothing in particular."]


def rows_run(engine: TTSEngine, batch: int, steps: int = 60,
             texts: list[str] = TEXTS) -> tuple[np.ndarray, np.ndarray]:
    """`batch` streams of `texts` (in turn) placed on rows 0..batch-1 by hand, stepped together:
    (codes, pcm), each [steps, batch, ...]."""
    st = engine.stepper
    newcomers = [RowStart(engine.model.prompt(engine.make_request(texts[i % len(texts)],
                                                                  "serena", "english")),
                          sampled=False, seed=0, min_new_tokens=10**9) for i in range(batch)]
    st.prefill(0, newcomers)
    positions = [n.start_position for n in newcomers]
    codes, pcm = [], []
    for _ in range(steps):
        r = st.step(batch, positions, mixed=False)
        positions = [p + 1 for p in positions]
        codes.append(r.codes)
        pcm.append(r.pcm)
    return np.stack(codes), np.stack(pcm)


@pytest.mark.parametrize("batch, compile_steps, invariant", [
    (1, "0", 0), (3, "0", 0), (16, "0", 0), (64, "0", 0),
    (1, "1", 0), (16, "1", 0), (1, "0", 1), (16, "0", 1)])
def test_batch_graphs_equal_the_same_parts_eager(tiny_model_dir, batch, compile_steps, invariant):
    outs = []
    for graphs in (True, False):
        engine = TTSEngine(EngineConfig.from_env(model_dir=str(tiny_model_dir), max_batch=64,
                                                 cuda_graphs=graphs, compile_steps=compile_steps,
                                                 batch_invariant=invariant))
        try:
            assert engine.stepper.graphed == graphs
            outs.append(rows_run(engine, batch))
        finally:
            engine.close()
    (gc, gp), (ec, ep) = outs
    assert np.array_equal(gc, ec) and np.array_equal(gp, ep)


def test_invariant_mode_concurrent_equals_solo_on_the_gpu(tiny_model_dir):
    engine = TTSEngine(EngineConfig.from_env(model_dir=str(tiny_model_dir), max_batch=8,
                                             batch_invariant=1, admission="rows"))

    async def main():
        reqs = [engine.make_request(t, "serena", "english") for t in TEXTS]
        solo = [(await engine.synthesize_pcm(r))[0] for r in reqs]
        together = await asyncio.gather(*[engine.synthesize_pcm(r) for r in reqs])
        return solo, together

    try:
        solo, together = asyncio.run(main())
        for a, (b, _) in zip(solo, together, strict=True):
            assert np.array_equal(a, b)
    finally:
        engine.close()


def test_invariant_mode_rows_stepped_together_equal_each_text_stepped_alone(tiny_model_dir):
    """The batched path with the invariant kernels (staged prefill of 16 newcomers, one step
    of 16 rows per frame, graphs) against each text alone on row 0."""
    engine = TTSEngine(EngineConfig.from_env(model_dir=str(tiny_model_dir), max_batch=16,
                                             batch_invariant=1))
    try:
        assert engine.stepper.graphed and engine.stepper.invariance == "kernels"
        alone = [rows_run(engine, 1, texts=[t]) for t in TEXTS]
        codes, pcm = rows_run(engine, 16)
        for i in range(16):
            assert np.array_equal(codes[:, i], alone[i % len(TEXTS)][0][:, 0]), i
            assert np.array_equal(pcm[:, i], alone[i % len(TEXTS)][1][:, 0]), i
    finally:
        engine.close()


def test_compile_is_refused_in_invariant_mode_on_the_gpu(tiny_model_dir):
    with pytest.raises(EngineStartError, match="TTS_COMPILE=0"):
        TTSEngine(EngineConfig.from_env(model_dir=str(tiny_model_dir), batch_invariant=1,
                                        compile_steps="1"))


def _rows_alike(full: torch.Tensor, compute, total: int) -> None:
    """compute(start, stop) on rows start..stop-1 equals those rows of `full`,
    for calls of 1, 3, 17, 64 rows."""
    for size in (1, 3, 17, 64):
        for start in {0, (total - size) // 2, total - size}:
            assert torch.equal(compute(start, start + size),
                               full[start : start + size]), (size, start)


def test_invariant_kernels_give_each_row_its_solo_result_at_the_0_6b_shapes():
    from tts_engine.model import invariant_kernels as kernels

    g = torch.Generator(device="cuda").manual_seed(0)

    def rand(*shape, dtype=torch.bfloat16):
        return torch.randn(*shape, device="cuda", generator=g).to(dtype)

    x, w = rand(256, 1024), rand(3072, 1024) / 32
    full = kernels.linear(x, w, None)
    assert (full.float() - F.linear(x.float(), w.float())).abs().max() < 0.05
    _rows_alike(full, lambda a, b: kernels.linear(x[a:b], w, None), 256)

    positions = torch.randint(0, 1000, (256,), device="cuda", generator=g)
    q, k, v = rand(256, 16, 1, 128), rand(256, 8, 1024, 128), rand(256, 8, 1024, 128)

    def decode(a: int, b: int, span: int = 1024) -> torch.Tensor:
        mask = (torch.arange(span, device="cuda")[None, :]
                <= positions[a:b, None])[:, None, None, :]
        return kernels.attention(q[a:b], k[a:b, :, :span], v[a:b, :, :span], mask, causal=False)

    full = decode(0, 256)
    reference = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), enable_gqa=True,
                                               attn_mask=(torch.arange(1024, device="cuda")[None, :]
                                                          <= positions[:, None])[:, None, None, :])
    assert (full.float() - reference).abs().max() < 0.05
    _rows_alike(full, decode, 256)
    short = positions < 500
    assert torch.equal(decode(0, 256, span=1024)[short],
                       torch.cat([decode(i, i + 1, span=512) for i in range(256)])[short])

    xc, wc = rand(256, 96, 1926, dtype=torch.float32), rand(1, 96, 7, dtype=torch.float32)
    exact = F.conv1d(xc.double(), wc.double()).float()
    for tf32 in (False, True):
        full = kernels.conv1d(xc, wc, None, 1, tf32=tf32)
        assert (full - exact).abs().max() < (0.2 if tf32 else 1e-3)
        _rows_alike(full, lambda a, b, tf32=tf32: kernels.conv1d(xc[a:b], wc, None, 1, tf32=tf32),
                    256)

    rows = rand(256, 1024, dtype=torch.float32)
    _rows_alike(kernels.row_sum(rows), lambda a, b: kernels.row_sum(rows[a:b]), 256)
