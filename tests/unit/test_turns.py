"""TurnClock: a worker turn longer than a frame is counted and logged with its phases, the
worker's CPU time and the garbage collector's pauses in it; a short turn is not."""

from __future__ import annotations

import gc
import logging
import re
import time

import pytest

from tts_engine.runtime.turns import SLOW_TURN_MS, TurnClock


@pytest.fixture
def clock():
    clock = TurnClock()
    clock.arm()
    yield clock
    clock.close()


def test_a_short_turn_is_not_slow(clock, caplog):
    with clock.phase("launch"):
        pass
    clock.end_turn(batch=4, admitted=0)
    assert clock.report()["slow_turns"] == 0 and not caplog.records


def test_a_slow_turn_is_logged_with_where_its_time_went(clock, caplog):
    caplog.set_level(logging.WARNING, logger="tts_engine.runtime")
    with clock.phase("admit"):
        time.sleep(SLOW_TURN_MS / 1000 + 0.02)  # waiting, not computing: little worker CPU
    with clock.phase("hand_over"):
        gc.collect()
    clock.end_turn(batch=7, admitted=3)
    report = clock.report()
    assert report["slow_turns"] == 1 and report["slow_turn_ms_max"] > SLOW_TURN_MS
    assert report["gc_full_collections"] >= 1 and report["gc_pause_ms_sum"] > 0
    (line,) = [r.getMessage() for r in caplog.records]
    assert "with 7 streams (3 admitted)" in line and "admit 1" in line, line
    assert re.search(r"\(\d+ full: \d+ objects in the oldest generation, \d+ collected by the "
                     r"last\) \(1 slow turns since the last line\)", line), line


def test_slow_turns_are_logged_at_most_once_a_second_and_counted_all(clock, caplog):
    caplog.set_level(logging.WARNING, logger="tts_engine.runtime")
    for _ in range(3):
        with clock.phase("land"):
            time.sleep(SLOW_TURN_MS / 1000 + 0.005)
        clock.end_turn(batch=1, admitted=0)
    assert clock.report()["slow_turns"] == 3
    assert len(caplog.records) == 1


def test_idle_time_is_no_turns(clock):
    time.sleep(SLOW_TURN_MS / 1000 + 0.01)  # the worker waits for work
    clock.restart()
    clock.end_turn(batch=1, admitted=1)
    assert clock.report()["slow_turns"] == 0


def test_turns_and_collections_before_the_engine_is_ready_are_not_counted(caplog):
    clock = TurnClock()  # the warm-up's eager turns are slow by nature
    try:
        with clock.phase("launch"):
            time.sleep(SLOW_TURN_MS / 1000 + 0.01)
        gc.collect()
        clock.end_turn(batch=1, admitted=0)
        report = clock.report()
        assert report["slow_turns"] == 0 and report["gc_pauses"] == 0 and not caplog.records
    finally:
        clock.close()
