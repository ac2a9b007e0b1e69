"""Admission control's arithmetic: capacity from measured step times, and the deadline
gate that keeps a burst of admissions from starving the running streams."""

from __future__ import annotations

import math

from tts_engine.runtime.admission import ADMIT_SAFETY_MS, Admission
from tts_engine.runtime.session import PLAYOUT_BUFFER_S, StreamSession
from tts_engine.sampling import SamplingParams
from tts_engine.synthesis import Request

BUCKETS = (1, 2, 4, 8)


def test_capacity_is_the_largest_batch_whose_step_fits_the_budget() -> None:
    a = Admission(BUCKETS, max_active=0, queue_timeout_s=2.0)
    for bucket, ms in zip(BUCKETS, (20.0, 30.0, 60.0, 90.0), strict=True):
        a.measured(bucket, ms)
    assert a.capacity == 4  # 60 ms fits 0.8 x 80 ms, 90 ms does not
    a.observe(4, 200.0)  # real steps of 4 streams turn out slower: the average follows
    assert a.capacity == 2


def test_an_admission_waits_while_a_running_stream_cannot_spare_its_cost() -> None:
    a = Admission(BUCKETS, max_active=0, queue_timeout_s=2.0)
    a.measured(1, 10.0)
    a.observe_admission(30.0)
    a.observe_hand_over(15.0)  # a complete packet still waits for the hand-over after the admission
    needed_s = (30.0 + 15.0 + ADMIT_SAFETY_MS) / 1000
    assert a.may_admit(0, math.inf)
    assert a.may_admit(1, needed_s + 0.001)
    assert not a.may_admit(1, needed_s - 0.001)
    rows_mode = Admission(BUCKETS, max_active=0, queue_timeout_s=2.0, realtime=False)
    assert rows_mode.may_admit(1, -1.0)  # offline work: margins do not matter
    assert not a.may_admit(8, math.inf)  # no capacity, however much time there is


def test_a_streams_margin_counts_its_buffer_and_the_steps_its_next_packet_needs() -> None:
    request = Request("hi", "serena", "english", SamplingParams(), None)
    s = StreamSession(request, packet_tokens=2, first_packet_tokens=1, sink=lambda item: None)
    assert s.margin_s(0.0, 0.05) == math.inf  # no packet yet: nothing to play
    s.first_packet_at = 10.0
    s.metrics.packets, s.metrics.audio_s = 1, 0.08  # the first packet: one 80 ms frame
    # due at 10.0 + 0.15 + 0.08; the next packet needs two steps of 50 ms
    assert math.isclose(s.margin_s(10.0, 0.05), PLAYOUT_BUFFER_S + 0.08 - 0.10)
    s.pending.append(None)  # one of its two frames is done
    assert math.isclose(s.margin_s(10.1, 0.05), PLAYOUT_BUFFER_S + 0.08 - 0.1 - 0.05)
