"""The end-of-turn model's cost per decision.

Run: `python -m agent.bench_turn_detector [--json out.json]`.

One decision is one prediction on the last 1.2 s of the user's audio (19,200
samples at 16 kHz), made when the VAD has heard 200 ms of silence. Its compute
does not depend on what the audio says, so the input is a fixed seeded signal.
Two paths are timed, each after warm-up:

- `native`: `livekit.local_inference.EOT.predict`, the model call alone;
- `session`: a `TurnDetector(version="v1-mini")` stream's `predict()`, as the
  agent's session makes it (audio pushed in 10 ms frames, the model in a
  worker thread, the result back on the event loop).

Per path: wall time P50/P95/max and the process CPU time of a decision (all
threads, so a model that runs on several cores shows their sum). The table is
printed last; `--json` writes it with the environment. `--paths native` needs only
the package `livekit-local-inference`: the way to measure a host (a GPU host, say)
that lacks the rest of the agent's packages.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import numpy as np

from streamtalk_common.audio import INPUT_SAMPLE_RATE
from streamtalk_common.stats import percentile
from streamtalk_common.tables import print_table
from tts_engine.bench import write_result

FRAME_SAMPLES = INPUT_SAMPLE_RATE // 100


def speech_like_signal(seconds: float = 1.2, seed: int = 0) -> np.ndarray:
    """Speech-like int16 audio: a seeded noise burst shaped by a 4 Hz syllable envelope."""
    rng = np.random.default_rng(seed)
    n = int(seconds * INPUT_SAMPLE_RATE)
    t = np.arange(n) / INPUT_SAMPLE_RATE
    envelope = 0.5 * (1 + np.sin(2 * np.pi * 4 * t))
    return (rng.standard_normal(n) * envelope * 3000).clip(-32768, 32767).astype(np.int16)


def _row(path: str, walls: list[float], cpus: list[float]) -> dict:
    return {"path": path, "n": len(walls), "wall_p50_ms": percentile(walls, 50),
            "wall_p95_ms": percentile(walls, 95), "wall_max_ms": max(walls),
            "cpu_p50_ms": statistics.median(cpus)}


def bench_native(pcm: np.ndarray, warmup: int, repeats: int) -> dict:
    from livekit.local_inference import EOT

    eot = EOT()
    for _ in range(warmup):
        eot.predict(pcm)
    walls, cpus = [], []
    for _ in range(repeats):
        c0, t0 = time.process_time(), time.perf_counter()
        eot.predict(pcm)
        walls.append((time.perf_counter() - t0) * 1000)
        cpus.append((time.process_time() - c0) * 1000)
    return _row("native", walls, cpus)


async def bench_session(pcm: np.ndarray, warmup: int, repeats: int) -> dict:
    from livekit import rtc
    from livekit.agents.inference import TurnDetector

    stream = TurnDetector(version="v1-mini").stream()
    try:
        for i in range(0, len(pcm) - FRAME_SAMPLES + 1, FRAME_SAMPLES):
            stream.push_audio(rtc.AudioFrame(pcm[i:i + FRAME_SAMPLES].tobytes(), INPUT_SAMPLE_RATE,
                                             1, FRAME_SAMPLES))
        await asyncio.sleep(0.1)  # the stream's task moves the frames into the model's buffer
        for _ in range(warmup):
            await stream.predict()
        walls, cpus = [], []
        for _ in range(repeats):
            c0, t0 = time.process_time(), time.perf_counter()
            await stream.predict()
            walls.append((time.perf_counter() - t0) * 1000)
            cpus.append((time.process_time() - c0) * 1000)
    finally:
        await stream.aclose()
    return _row("session", walls, cpus)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m agent.bench_turn_detector",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--warmup", type=int, default=10, help="decisions before timing (default 10)")
    ap.add_argument("--repeats", type=int, default=100,
                    help="timed decisions per path (default 100)")
    ap.add_argument("--paths", nargs="+", choices=("native", "session"),
                    default=["native", "session"], help="the paths to time (default both)")
    ap.add_argument("--json", help="write the result here")
    args = ap.parse_args(argv)
    if args.warmup < 0 or args.repeats < 1:
        ap.error("--warmup must be >= 0 and --repeats >= 1")

    from livekit.local_inference import _native, init_eot

    t0 = time.perf_counter()
    init_eot()
    load_s = time.perf_counter() - t0
    pcm = speech_like_signal()
    rows = []
    if "native" in args.paths:
        rows.append(bench_native(pcm, args.warmup, args.repeats))
    if "session" in args.paths:
        rows.append(asyncio.run(bench_session(pcm, args.warmup, args.repeats)))
    extra = {"model": "turn-detector-v1-mini (livekit-local-inference)", "load_s": round(load_s, 3),
             "native_parallelism": _native._parallelism(), "window_samples": len(pcm),
             "warmup": args.warmup}
    write_result(args.json, "turn_detector", rows, extra)
    print(f"model load {load_s:.2f} s, native parallelism {extra['native_parallelism']}, "
          f"window {len(pcm)} samples, {args.warmup} warm-up decisions")
    print_table("end-of-turn model, cost per decision (ms)", rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
