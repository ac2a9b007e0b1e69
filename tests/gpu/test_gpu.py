"""GPU-only checks (run on a CUDA machine; CI has no GPU and skips them).

The batch step's CUDA graphs must reproduce the same parts run eagerly bit for
bit at several batch buckets (with the compiled layers of TTS_COMPILE=1 too), and
streams must equal their solo runs in batch-invariant mode on the GPU too.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import torch

from tts_engine.config import EngineConfig
from tts_engine.runtime import TTSEngine
from tts_engine.runtime.stepper import RowStart

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

TEXTS = ["Hello there, how are you?", "A somewhat longer sentence that runs for more frames than the first.",
         "Third.", "The fourth stream talks a while about nothing in particular."]


def rows_run(engine: TTSEngine, batch: int, steps: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """`batch` streams placed on rows 0..batch-1 by hand, stepped together: (codes, pcm)."""
    st = engine.stepper
    newcomers = [RowStart(engine.model.prompt(engine.make_request(TEXTS[i % len(TEXTS)], "serena", "english")),
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


@pytest.mark.parametrize("batch, compile_steps", [(1, "0"), (3, "0"), (16, "0"), (64, "0"), (1, "1"), (16, "1")])
def test_batch_graphs_equal_the_same_parts_eager(tiny_model_dir, batch, compile_steps):
    outs = []
    for graphs in (True, False):
        engine = TTSEngine(EngineConfig.from_env(model_dir=str(tiny_model_dir), max_batch=64, cuda_graphs=graphs,
                                                 compile_steps=compile_steps))
        try:
            assert engine.stepper.graphed == graphs
            outs.append(rows_run(engine, batch))
        finally:
            engine.close()
    (gc, gp), (ec, ep) = outs
    assert np.array_equal(gc, ec) and np.array_equal(gp, ep)


def test_invariant_mode_concurrent_equals_solo_on_the_gpu(tiny_model_dir):
    engine = TTSEngine(EngineConfig.from_env(model_dir=str(tiny_model_dir), max_batch=8, batch_invariant=1,
                                             admission="rows"))

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
