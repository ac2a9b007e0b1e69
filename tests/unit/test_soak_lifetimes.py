"""The soak's process lifetimes (tools/soak/lifetimes.py): a new worker process starts a
new lifetime, the slope is a lifetime's, and a restart's gap is read from the worker's log."""

from __future__ import annotations

import json

from tools.soak import lifetimes
from tools.soak.procstat import Sample

LOOP, OLD, NEW = 100, 200, 300


def sample(t: float, rss: float, *children: int) -> Sample:
    return Sample(t, rss, fds=30, threads=20, processes=1 + len(children),
                  children=frozenset(children))


def sawtooth() -> list[Sample]:
    """A worker growing 5 MiB/min for 2 minutes, a restart gap, a fresh one at 5 MiB/min."""
    old = [sample(t, 1000 + t / 12, OLD) for t in range(0, 125, 5)]
    gap = [sample(125, 3), sample(130, 3)]
    new = [sample(t, 1000 + (t - 135) / 12, NEW) for t in range(135, 260, 5)]
    return old + gap + new


def test_a_restart_splits_the_series_and_its_gap_belongs_to_no_lifetime() -> None:
    runs = lifetimes.split(sawtooth())
    assert [(run[0].children, len(run)) for run in runs] == [({OLD}, 25), ({NEW}, 25)]


def test_one_process_is_one_lifetime_even_without_children() -> None:
    series = [sample(t, 50.0) for t in range(0, 60, 5)]
    assert lifetimes.split(series) == [series]


def test_the_slope_is_a_lifetimes_not_the_sawtooths() -> None:
    runs = [lifetimes.summary(run, 0.0) for run in lifetimes.split(sawtooth())]
    assert [r["rss_slope_mib_per_min"] for r in runs] == [5.0, 5.0]
    assert (runs[1]["rss_mib_start"], runs[1]["rss_mib_end"], runs[1]["rss_mib_peak"]) \
        == (1000.0, 1010.0, 1010.0)
    assert lifetimes.process_slope(runs) == 5.0


def test_a_lifetime_too_short_for_a_slope_has_none() -> None:
    short = [lifetimes.summary([sample(t, 10 + t, NEW) for t in range(0, 15, 5)], 0.0)]
    assert short[0]["rss_slope_mib_per_min"] is None
    assert lifetimes.process_slope(short) == 0.0


def registered(at: str) -> str:
    return json.dumps({"message": "registered worker", "timestamp": at})


def test_each_exit_gets_the_seconds_until_the_next_worker_registered() -> None:
    log = "\n".join([
        registered("2026-12-05T10:00:00.000000+00:00"),
        "[keep_running 2026-12-05T10:05:00.500Z] agent exited with status 75 after 300 s "
        "(recycled); starting it again",
        '{"message": "room r1: agent ready", "timestamp": "2026-12-05T10:05:03+00:00"}',
        registered("2026-12-05T10:05:12.750000+00:00"),
        "[keep_running 2026-12-05T10:09:00.000Z] agent exited with status 1 after 228 s, "
        "unexpectedly; starting it again in 5 s",
    ])
    assert lifetimes.restarts(log) == [
        {"at": "2026-12-05T10:05:00.500Z", "status": 75, "up_s": 300, "recycled": True,
         "registered_after_s": 12.2},
        {"at": "2026-12-05T10:09:00.000Z", "status": 1, "up_s": 228, "recycled": False,
         "registered_after_s": None},
    ]


def test_a_fresh_workers_loading_belongs_to_no_lifetime() -> None:
    runs = lifetimes.split(sawtooth())
    # the first worker registered before the samples began; the fresh one 15 s after its start
    served = lifetimes.serving(runs, registered=[-600.0, 150.0])
    assert [(run[0].t, run[-1].t, len(run)) for run in served] == [(0, 120, 25), (150, 255, 22)]
