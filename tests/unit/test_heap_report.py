"""The worker's memory report (agent/heap_report.py) names what grew between reports."""

from __future__ import annotations

import re
import tracemalloc

from agent.heap_report import HeapReport


class PiledUp:
    """Objects a leak would leave behind."""


def test_a_report_names_the_objects_and_the_allocations_that_grew() -> None:
    report = HeapReport(lambda: 3, every_s=60, tracemalloc_frames=4)
    tracemalloc.start(4)
    try:
        first = report.report()
        pile = [PiledUp() for _ in range(5000)]
        second = report.report()
    finally:
        tracemalloc.stop()
    assert re.search(r"malloc in use [1-9][\d.]* MiB, free but kept [\d.]+ MiB, [1-9]\d* arenas",
                     first)
    assert "3 rooms" in first
    assert f"PiledUp +{len(pile)}" in second
    growth = second.split("grown most:")[1]
    assert __file__ in growth.split("KiB")[1]  # the largest growth is the pile, allocated here


def test_without_tracing_a_report_has_no_allocation_growth() -> None:
    report = HeapReport(lambda: 0, every_s=60)
    report.report()
    assert "tracemalloc" not in report.report()
