"""The load a worker reports to LiveKit (agent/load.py): the tighter of its rooms and its
TTS engine's streams, full below the engine's reject point, and on its /metrics. With the
real engine's streams: integration/test_agent_load_engine.py."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from agent.config import AgentConfig, AgentConfigError
from agent.load import LoadCollector, WorkerLoad


def test_the_load_is_the_tighter_of_rooms_and_engine_streams() -> None:
    listening = WorkerLoad(rooms=4, max_rooms=8, engine_streams=0, engine_capacity=32)
    assert listening.load == 0.5  # four rooms of eight, nobody speaking
    speaking = WorkerLoad(rooms=4, max_rooms=8, engine_streams=3, engine_capacity=4)
    assert speaking.load == 0.75  # the same rooms, but the engine is three quarters busy
    queued = WorkerLoad(rooms=2, max_rooms=8, engine_streams=6, engine_capacity=4)
    assert queued.load == 1.0  # streams wait beyond the capacity: full, never above 1
    assert WorkerLoad(rooms=0, max_rooms=8, engine_streams=0, engine_capacity=0).load == 0.0


def test_the_threshold_stays_below_the_engines_reject_point() -> None:
    assert AgentConfig.from_env({}).load_threshold == 0.9
    assert AgentConfig.from_env({"AGENT_LOAD_THRESHOLD": "0.7"}).load_threshold == 0.7
    for bad in ("1", "1.5", "0", "full"):
        with pytest.raises(AgentConfigError, match="AGENT_LOAD_THRESHOLD"):
            AgentConfig.from_env({"AGENT_LOAD_THRESHOLD": bad})
    # with the defaults a worker takes its eight rooms, but no stream past 90% of the engine's
    threshold = AgentConfig.from_env({}).load_threshold
    assert WorkerLoad(rooms=7, max_rooms=8, engine_streams=0, engine_capacity=96).load < threshold
    assert WorkerLoad(rooms=8, max_rooms=8, engine_streams=0, engine_capacity=96).load >= threshold
    assert WorkerLoad(rooms=2, max_rooms=8, engine_streams=86, engine_capacity=96).load < threshold
    assert WorkerLoad(rooms=2, max_rooms=8, engine_streams=87, engine_capacity=96).load >= threshold


def test_the_metrics_show_the_load_and_its_parts() -> None:
    now = WorkerLoad(rooms=3, max_rooms=8, engine_streams=2, engine_capacity=4)
    registry = CollectorRegistry()
    registry.register(LoadCollector(lambda: now, 0.9))
    text = generate_latest(registry).decode()
    for line in ("streamtalk_agent_load 0.5", "streamtalk_agent_load_threshold 0.9",
                 "streamtalk_agent_rooms 3.0", "streamtalk_agent_max_rooms 8.0",
                 "streamtalk_agent_engine_streams 2.0", "streamtalk_agent_engine_capacity 4.0"):
        assert line in text.splitlines(), text
