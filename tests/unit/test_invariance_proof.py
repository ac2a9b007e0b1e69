"""The invariance proof's bookkeeping (`bench invariance`): how it mixes requests into
batches and how it compares each stream's PCM with its solo run."""

from __future__ import annotations

import random

import numpy as np

from tts_engine.bench import _compare, _mixes


def test_mixes_use_every_request_once_up_to_the_request_count_and_repeat_beyond():
    pairs = _mixes(random.Random(0), 32, 2)
    assert len(pairs) == 16 and sorted(i for p in pairs for i in p) == list(range(32))
    assert pairs != _mixes(random.Random(1), 32, 2)  # a random pairing, not the same one each time
    (big,) = _mixes(random.Random(0), 32, 256)
    assert len(big) == 256 and set(big) <= set(range(32)) and len(set(big)) > 16


def test_a_stream_that_differs_from_its_solo_run_is_named_with_its_first_differing_sample():
    solo = [np.arange(10, dtype=np.float32), np.ones(10, dtype=np.float32)]
    changed = solo[1].copy()
    changed[7] = 0.5
    row = _compare("batch 2", solo, [[0, 1], [1, 0]], [[solo[0], changed], [solo[1], solo[0]]])
    assert row["streams"] == 4 and row["requests_differing"] == [1]
    assert row["identical_streams"] == 3
    assert row["first_differing_sample_min"] == 7
    assert _compare("same", solo, [[0, 1]], [list(solo)])["requests_differing"] == []
