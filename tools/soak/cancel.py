"""`cancel`: cancel rounds against an in-process engine, then look for what was left behind.

The engine runs here on the CPU with the tiny checkpoint, `concurrency` rows and no
real-time gate (every stream is admitted as soon as a row is free). After a warm-up of
the same path (the torch thread pools and the allocator settle), the OS threads of
this process are counted; then `rounds` streams are opened and cancelled at random
points (still queued, just admitted, after 1..8 packets; `tts_engine.bench.cancel_rounds`).
Afterwards nothing may remain: no session active or queued, no row in use, no thread
more than before. The latency is from `cancel()` to the engine letting the stream go
(its row is free by then).
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path
from typing import Any

from streamtalk_common.stats import latency_summary

from .procstat import thread_count

WARMUP_ROUNDS_PER_STREAM = 2


def run_cancel(model_dir: Path, rounds: int, concurrency: int, seed: int,
               progress) -> dict[str, Any]:  # noqa: ANN001
    from tts_engine.bench import UNGATED, cancel_rounds
    from tts_engine.config import EngineConfig
    from tts_engine.runtime import TTSEngine

    config = EngineConfig.from_env(model_dir=str(model_dir), device="cpu", max_batch=concurrency,
                                   **UNGATED)
    progress(f"cancel: loading {model_dir} on the CPU, {concurrency} rows")
    engine = TTSEngine(config)
    try:
        rng = random.Random(seed)
        asyncio.run(cancel_rounds(engine, WARMUP_ROUNDS_PER_STREAM * concurrency, concurrency, rng))
        threads_before = thread_count()
        every = max(1, rounds // 10)

        def report(n: int, ms: float) -> None:
            if n % every == 0:
                progress(f"cancel: round {n}/{rounds}, last {ms:.1f} ms, "
                         f"{engine.active_sessions} sessions open")

        start = time.monotonic()
        result = asyncio.run(cancel_rounds(engine, rounds, concurrency, rng, on_round=report))
        wall_s = time.monotonic() - start
        stats = engine.stats()
        latencies = result["latencies_ms"]
        threads_after = thread_count()
        leaks = {"sessions": engine.active_sessions, "queued": stats["queued"],
                 "rows_in_use": stats["active"],
                 "threads": max(0, threads_after - threads_before)}
    finally:
        engine.close()
    summary = latency_summary(latencies, digits=2)
    return {
        "rounds": len(latencies), "concurrency": concurrency, "seed": seed,
        "wall_s": round(wall_s, 1), "cancel_points": result["points"],
        "cancel_to_freed_ms_p50": summary["p50_ms"],
        "cancel_to_freed_ms_p95": summary["p95_ms"],
        "leaked_sessions": leaks["sessions"], "queued_after": leaks["queued"],
        "rows_in_use_after": leaks["rows_in_use"], "rows": stats["rows"],
        "threads_before": threads_before, "threads_after": threads_after,
        "ok": not any(leaks.values()) and len(latencies) == rounds,
    }
