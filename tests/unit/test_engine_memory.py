"""The start-up memory account: its arithmetic on allocator samples, and a CPU probe
(nothing measured). A whole engine's account: test_engine_bench.py (bench memory) and
test_tts_server.py (/readyz, /metrics)."""

from __future__ import annotations

import pytest
import torch

from tts_engine.runtime.memory import MIB, POINTS, MemoryProbe, MemorySample, account_of

# A start-up as a GPU engine of 64 rows sees it (MiB): the process holds 2 MiB before
# loading; loading leaves 1900 MiB of weights live (a cast's temporaries stay cached,
# so 2300 reserved); the rows add 7500; the cache is emptied around the capture, whose
# pool takes 1800 more; the peak reserved was 13000.
SAMPLES = {
    "start": MemorySample(0, 2 * MIB),
    "loaded": MemorySample(1900 * MIB, 2300 * MIB),
    "rows": MemorySample(9400 * MIB, 9800 * MIB),
    "before_capture": MemorySample(9400 * MIB, 9402 * MIB),
    "captured": MemorySample(9500 * MIB, 11202 * MIB),
    "ready": MemorySample(9500 * MIB, 12000 * MIB),
}


def test_the_parts_come_from_the_samples_and_add_up_to_the_peak():
    a = account_of("cuda:0", 64, 1024, 7400 * MIB, SAMPLES, peak_reserved=13000 * MIB,
                   device_total=143771 * MIB, device_free=130000 * MIB)
    assert (a.weights_mib, a.rows_mib, a.graphs_mib) == (1900, 7500, 1800)
    assert a.workspace_mib == 13000 - 2 - 1900 - 7500 - 1800
    assert a.weights_mib + a.rows_mib + a.graphs_mib + a.workspace_mib + 2 == a.peak_reserved_mib
    assert (a.reserved_mib, a.device_total_mib, a.device_free_mib,
            a.row_pool_mib) == (12000, 143771, 130000, 7400)
    assert "weights 1900 MiB, rows 7500 MiB (64 rows x 1024 positions), graphs 1800 MiB" \
        in a.summary()


def test_a_peak_the_parts_explain_leaves_no_workspace():
    a = account_of("cuda:0", 64, 1024, 0, SAMPLES, peak_reserved=11000 * MIB, device_total=1,
                   device_free=1)
    assert a.workspace_mib == 0


def test_a_missing_sample_is_named():
    samples = {p: s for p, s in SAMPLES.items() if p != "captured"}
    with pytest.raises(ValueError, match="missing at captured; needed at start, loaded"):
        account_of("cuda:0", 1, 64, 0, samples, 0, 0, 0)


def test_a_cpu_probe_measures_nothing():
    probe = MemoryProbe(torch.device("cpu"))
    for point in POINTS[1:]:
        probe.mark(point, settle=True)
    a = probe.account(2, 256, 5 * MIB)
    assert a.device == "cpu" \
        and (a.weights_mib, a.rows_mib, a.graphs_mib, a.workspace_mib) == (0, 0, 0, 0)
    assert a.summary() == ("engine memory on cpu: not measured (the row pool holds 5 MiB, "
                           "2 rows x 256 positions)")

