"""The load a worker reports (agent/load.py) from the real engine's streams on the tiny
checkpoint; its arithmetic: unit/test_agent_load.py."""

from __future__ import annotations

from agent.load import WorkerLoad
from tts_engine.config import EngineConfig
from tts_engine.runtime import TTSEngine


async def test_a_busy_engine_fills_the_worker_with_few_rooms(tiny_model_dir) -> None:
    """The real engine's streams in use (active and queued) against its capacity: two
    streams of an engine that keeps two real time make a worker of one room full."""
    engine = TTSEngine(EngineConfig.from_env({}, model_dir=str(tiny_model_dir), device="cpu",
                                             max_batch=4, max_active_streams=2, admission="rows"),
                       warmup=False)
    try:
        assert engine.capacity == 2

        def now() -> WorkerLoad:
            return WorkerLoad(rooms=1, max_rooms=8, engine_streams=engine.active_sessions,
                              engine_capacity=engine.capacity)

        assert now().load == 1 / 8
        request = engine.make_request("A sentence long enough to keep the stream busy for a while.",
                                      "serena")
        handles = [engine.open_stream(request) for _ in range(2)]
        assert now().load == 1.0 and now().load >= 0.9
        for handle in handles:
            handle.cancel()
            await handle.closed()
        assert now().load == 1 / 8
    finally:
        engine.close()
