"""When a grown worker leaves service (agent/recycle.py): the threshold, idle or not, the
hard limit, and off."""

from __future__ import annotations

import pytest

from agent.config import AgentConfig
from agent.recycle import MIB, RecyclePolicy, Verdict

BASELINE = 1200 * MIB
policy = RecyclePolicy(growth_mib=100, baseline_bytes=BASELINE)


def test_growth_is_measured_from_the_baseline() -> None:
    assert policy.growth(BASELINE + 42 * MIB) == 42
    assert policy.growth(BASELINE - 5 * MIB) == -5


@pytest.mark.parametrize("rooms_open", [0, 1, 5])
def test_below_the_threshold_the_worker_keeps_serving(rooms_open: int) -> None:
    assert policy.verdict(BASELINE + 99 * MIB, rooms_open) is Verdict.KEEP


def test_at_the_threshold_an_idle_worker_recycles() -> None:
    assert policy.verdict(BASELINE + 100 * MIB, 0) is Verdict.RECYCLE
    assert policy.verdict(BASELINE + 150 * MIB, 0) is Verdict.RECYCLE


def test_a_busy_worker_over_the_threshold_waits_for_its_rooms() -> None:
    assert policy.verdict(BASELINE + 100 * MIB, 1) is Verdict.KEEP
    assert policy.verdict(BASELINE + 199 * MIB, 3) is Verdict.KEEP


def test_at_twice_the_threshold_a_busy_worker_drains() -> None:
    assert policy.verdict(BASELINE + 200 * MIB, 2) is Verdict.DRAIN
    assert policy.verdict(BASELINE + 200 * MIB, 0) is Verdict.RECYCLE  # idle: no room to drain


def test_zero_never_recycles() -> None:
    off = RecyclePolicy(growth_mib=0, baseline_bytes=BASELINE)
    assert off.verdict(BASELINE + 10_000 * MIB, 0) is Verdict.KEEP


def test_the_knob_defaults_to_a_large_growth_and_refuses_a_negative_one() -> None:
    assert AgentConfig.from_env({}).recycle_growth_mib == 1024
    assert AgentConfig.from_env({"AGENT_RECYCLE_GROWTH_MIB": "0"}).recycle_growth_mib == 0
    with pytest.raises(ValueError, match="AGENT_RECYCLE_GROWTH_MIB"):
        AgentConfig.from_env({"AGENT_RECYCLE_GROWTH_MIB": "-1"})
