"""GPU-only checks (run on a CUDA machine; CI has no GPU and skips them).

The frame CUDA graph must reproduce the same static step run eagerly bit for
bit, and the engine on CUDA must still stream audio equal to its own offline
decode within bf16 tolerance.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from tts_engine.config import EngineConfig
from tts_engine.engine import TTSEngine

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

TEXTS = ["Hello there, how are you?", "A somewhat longer sentence that runs for more frames than the first."]


def run_engine(model_dir, graphs: int, frames: int | None = None,
               decode_overlap: str = "auto") -> list[tuple[np.ndarray, dict]]:
    engine = TTSEngine(EngineConfig.from_env(model_dir=str(model_dir), cudagraph_talker=graphs, cudagraph_cp=graphs,
                                             decode_overlap=decode_overlap))
    try:
        out = []
        for text in TEXTS:
            req = engine.make_request(text, "serena", "english")
            if frames:
                req = dataclasses.replace(req, params=dataclasses.replace(req.params, min_new_tokens=10**9),
                                          max_frames=frames)
            pcm, metrics = engine.synthesize_blocking(req)
            out.append((pcm, metrics.graph_stats))
        return out
    finally:
        engine.close()


@pytest.mark.parametrize("frames", [None, 300])
def test_frame_graph_equals_eager_static_step(tiny_model_dir, frames):
    graph = run_engine(tiny_model_dir, 1, frames)
    eager = run_engine(tiny_model_dir, 0, frames)
    for (g, gstats), (e, estats) in zip(graph, eager, strict=True):
        assert gstats["graph_steps"] > 0 and estats["graph_steps"] == 0
        assert g.shape == e.shape
        assert np.array_equal(g, e)


def test_overlapped_decode_equals_in_line_decode(tiny_model_dir):
    """Decoding on the second CUDA stream (the default on CUDA) gives the same PCM, bit for bit."""
    overlapped = run_engine(tiny_model_dir, 1, 300, decode_overlap="on")
    in_line = run_engine(tiny_model_dir, 1, 300, decode_overlap="off")
    for (a, astats), (b, _) in zip(overlapped, in_line, strict=True):
        assert astats["decoder_graph_stats"]["graph_steps"] > 0
        assert a.shape == b.shape and np.array_equal(a, b)
