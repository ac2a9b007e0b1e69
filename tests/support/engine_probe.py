"""One engine start in a fresh process, for the compile tests (test_compile.py): start a
TTSEngine configured by the environment (TTS_COMPILE, STREAMTALK_HOME, ...), step one
stream alone and then two streams together on its rows, and write what the tests compare:

    python tests/support/engine_probe.py MODEL_DIR OUT_DIR
    OUT_DIR/streams.npz    codes_b1, pcm_b1 (batch 1), codes_b2, pcm_b2 (batch 2)
    OUT_DIR/startup.json   TTSEngine.startup_report()

A fresh process each time: dynamo's in-process caches would hide what a start loads
from the compile cache. The streams are placed on rows by hand, as in tests/gpu/test_gpu.py:
through the engine's queue, whether two requests share a step would depend on timing.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import numpy as np

from tts_engine.config import EngineConfig
from tts_engine.runtime import TTSEngine
from tts_engine.runtime.stepper import RowStart

TEXTS = ("Hello there, how are you?", "The quick brown fox jumps over the lazy dog.")
FRAMES = 12


def rows_run(engine: TTSEngine, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """Streams of TEXTS[:batch] on rows 0..batch-1, prefilled and stepped together, greedy
    and never ending: (codes [FRAMES, batch, 16], pcm [FRAMES, batch, 1920])."""
    starts = [RowStart(engine.model.prompt(engine.make_request(text, "serena", "english",
                                                               sample=False)),
                       sampled=False, seed=0, min_new_tokens=10**9) for text in TEXTS[:batch]]
    engine.stepper.prefill(0, starts)
    positions = [s.start_position for s in starts]
    codes, pcm = [], []
    for _ in range(FRAMES):
        result = engine.stepper.step(batch, positions, mixed=False)
        positions = [p + 1 for p in positions]
        codes.append(result.codes)
        pcm.append(result.pcm)
    return np.stack(codes), np.stack(pcm)


def main(model_dir: str, out_dir: str) -> None:
    logging.basicConfig(level=logging.INFO, format="%(name)s %(levelname)s %(message)s")
    out = Path(out_dir)
    engine = TTSEngine(EngineConfig.from_env(model_dir=model_dir, device="cpu", max_batch=2,
                                             row_positions=64))
    try:
        (codes_b1, pcm_b1), (codes_b2, pcm_b2) = rows_run(engine, 1), rows_run(engine, 2)
    finally:
        engine.close()
    np.savez(out / "streams.npz", codes_b1=codes_b1, pcm_b1=pcm_b1, codes_b2=codes_b2,
             pcm_b2=pcm_b2)
    (out / "startup.json").write_text(json.dumps(engine.startup_report(), indent=2))


if __name__ == "__main__":
    main(*sys.argv[1:])
