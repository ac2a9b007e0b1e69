"""Admission control's arithmetic: capacity from the calibrated step times and the
slowdown that real steps show, and the deadline gate that keeps a burst of admissions
from starving the running streams. Synthetic sequences of step periods stand in for
the engine's steps."""

from __future__ import annotations

import math

from tts_engine.runtime.admission import ADMIT_SAFETY_MS, ADMIT_WINDOW, STEP_WINDOW, Admission
from tts_engine.runtime.session import PLAYOUT_BUFFER_S, StreamSession
from tts_engine.sampling import SamplingParams
from tts_engine.synthesis import Request

BUCKETS = (1, 2, 4, 8)
CALIBRATED_MS = (20.0, 30.0, 60.0, 90.0)  # 60 ms fits 0.8 x 80 ms, 90 ms does not


def calibrated(**kwargs) -> Admission:
    a = Admission(BUCKETS, max_active=kwargs.pop("max_active", 0), queue_timeout_s=2.0, **kwargs)
    for bucket, ms in zip(BUCKETS, CALIBRATED_MS, strict=True):
        a.measured(bucket, ms)
    return a


def capacities(a: Admission, steps: list[tuple[int, float]]) -> list[int]:
    """The capacity after each (streams, period ms) step."""
    seen = []
    for n, ms in steps:
        a.observe(n, ms)
        seen.append(a.capacity)
    return seen


def test_capacity_is_the_largest_batch_whose_calibrated_step_fits_the_budget() -> None:
    a = calibrated()
    assert a.slowdown == 1.0 and a.capacity == 4
    assert a.predicted_steps() == dict(zip(BUCKETS, CALIBRATED_MS, strict=True))
    assert calibrated(max_active=3).capacity == 3  # TTS_MAX_ACTIVE_STREAMS caps it
    assert calibrated(realtime=False).capacity == 8  # rows mode: every row


def test_spikes_do_not_collapse_the_capacity() -> None:
    """Steps of 4 streams that take 1 s now and then (a GC, a stall of the host): the
    capacity never leaves 4, and a burst of them followed by smaller batches only (the
    4-stream bucket unused) leaves nothing behind."""
    a = calibrated()
    spiky = [(4, 1000.0 if i % 4 == 0 else 58.0) for i in range(200)]
    assert set(capacities(a, spiky)) == {4}
    burst = [(4, 1000.0)] * (STEP_WINDOW // 3)
    then_smaller = [(2, 30.0)] * STEP_WINDOW
    assert set(capacities(a, burst + then_smaller)) == {4}


def test_a_sustained_slowdown_lowers_the_capacity_and_recovery_raises_it_again() -> None:
    """Every step twice its calibration (a GPU shared with another process): the capacity
    falls to the batch whose doubled step still fits; once steps are back to their
    calibration, measured on the smaller batches still in use, it rises again."""
    a = calibrated()
    slow = capacities(a, [(4, 120.0)] * STEP_WINDOW)
    assert slow[0] == 4 and slow[-1] == 2  # 2 x 30 ms fits, 2 x 60 ms does not
    assert math.isclose(a.slowdown, 2.0) and math.isclose(a.predicted_ms(8), 180.0)
    recovered = capacities(a, [(2, 30.0)] * STEP_WINDOW)
    assert recovered[0] == 2 and recovered[-1] == 4
    assert math.isclose(a.slowdown, 1.0)


def test_steps_faster_than_their_calibration_raise_the_capacity() -> None:
    a = calibrated()
    seen = capacities(a, [(4, 42.0)] * STEP_WINDOW)
    assert seen[0] == 4 and seen[-1] == 8
    assert math.isclose(a.predicted_ms(8), 63.0)  # 0.7 x 90 ms fits


def test_without_a_calibration_nothing_is_predicted_and_the_rows_are_the_capacity() -> None:
    a = Admission(BUCKETS, max_active=0, queue_timeout_s=2.0)
    a.observe(4, 500.0)
    assert a.predicted_ms(4) == 0.0 and a.capacity == 8


def test_beyond_the_calibrated_buckets_the_largest_one_scales_linearly() -> None:
    a = Admission(BUCKETS, max_active=0, queue_timeout_s=2.0)
    a.measured(1, 20.0)
    a.measured(2, 70.0)  # calibration stops at the first bucket over the budget
    assert a.predicted_steps() == {1: 20.0, 2: 70.0, 4: 140.0, 8: 280.0}
    assert a.capacity == 1


def test_a_groups_admission_cost_is_planned_per_group_size() -> None:
    a = calibrated()
    assert a.admission_ms(4) == 0.0  # nothing admitted yet
    for _ in range(8):
        a.observe_admission(1, 5.0)
    assert a.admission_ms(1) == 5.0
    assert a.admission_ms(4) == 20.0  # beyond the largest group seen: scaled linearly
    for _ in range(ADMIT_WINDOW):
        a.observe_admission(16, 60.0)
    assert a.admission_costs() == {1: 5.0, 16: 60.0}
    assert a.admission_ms(4) == 60.0  # a larger group seen bounds it
    a.observe_admission(16, 2000.0)  # one stall does not move the plan
    assert a.admission_ms(16) == 60.0
    a.forget_admission_cost()
    assert a.admission_costs() == {}


def test_an_admission_waits_while_a_running_stream_cannot_spare_its_groups_cost() -> None:
    a = calibrated()
    for _ in range(8):
        a.observe_admission(1, 30.0)
        a.observe_admission(16, 90.0)
        a.observe_hand_over(15.0)  # a complete packet still waits for the hand-over
    needed_s = (30.0 + 15.0 + ADMIT_SAFETY_MS) / 1000
    assert a.may_admit(0, 1, math.inf)
    assert a.may_admit(1, 1, needed_s + 0.001)
    assert not a.may_admit(1, 1, needed_s - 0.001)
    # the margin that covers one newcomer does not cover the sixteenth of a group
    assert not a.may_admit(1, 16, needed_s + 0.001)
    assert a.may_admit(1, 16, (90.0 + 15.0 + ADMIT_SAFETY_MS) / 1000 + 0.001)
    rows_mode = calibrated(realtime=False)
    assert rows_mode.may_admit(1, 16, -1.0)  # offline work: margins do not matter
    assert not a.may_admit(4, 1, math.inf)  # no capacity, however much time there is


def test_each_frame_a_packet_needs_counts_the_rows_freed_before_its_step() -> None:
    a = calibrated()
    step_ms = a.predicted_ms(2)
    assert a.frame_ms(2) == step_ms  # nothing freed yet
    for _ in range(STEP_WINDOW):
        a.observe_settle(0.0)
    a.observe_settle(500.0)  # one slow turn does not move the plan
    assert a.frame_ms(2) == step_ms
    for _ in range(STEP_WINDOW // 2):
        a.observe_settle(8.0)  # streams end every turn (a closed loop's waves)
    assert a.frame_ms(2) == step_ms + 8.0
    assert a.predicted_ms(2) == step_ms  # the capacity's step is not the gate's frame


def test_a_streams_margin_counts_its_buffer_and_the_steps_its_next_packet_needs() -> None:
    request = Request("hi", "serena", "english", SamplingParams(), None)
    s = StreamSession(request, packet_tokens=2, first_packet_tokens=1, sink=lambda item: None)
    assert s.margin_s(0.0, 0.05) == math.inf  # no packet yet: nothing to play
    s.first_packet_at = 10.0
    s.metrics.packets, s.metrics.frames, s.metrics.audio_s = 1, 1, 0.08  # one 80 ms frame
    # due at 10.0 + 0.15 + 0.08; the next packet (one frame, no more than the first) needs
    # one step of 50 ms
    assert math.isclose(s.margin_s(10.0, 0.05), PLAYOUT_BUFFER_S + 0.08 - 0.05)
    s.metrics.packets, s.metrics.frames, s.metrics.audio_s = 2, 2, 0.16
    # the third packet has two frames: two steps
    assert math.isclose(s.margin_s(10.0, 0.05), PLAYOUT_BUFFER_S + 0.16 - 0.10)
    s.pending.append(None)  # one of its two frames is done
    assert math.isclose(s.margin_s(10.1, 0.05), PLAYOUT_BUFFER_S + 0.16 - 0.1 - 0.05)
