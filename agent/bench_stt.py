"""STT latency of an Omni backend as the agent sees it: `python -m agent.bench_stt WAV...`.

Each WAV (16-bit mono) is resampled to the agent's 16 kHz room input and recognised through
`OmniSTT.transcribe_frame`, the agent's own request path (chat with an audio_url WAV, or
/audio/transcriptions). The first `--warmup` requests are not counted; then each WAV is
recognised `--repeat` times in turn. Prints a table last, one row per WAV (P50, P95, min,
max in ms); `--json` also writes the numbers. The time is the trace's `stt` interval
(stt_start -> stt_end) without the VAD: WAV encoding, the HTTP round trip and the recognition.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

from livekit import rtc

from streamtalk_common.audio import INPUT_SAMPLE_RATE, read_wav
from streamtalk_common.stats import latency_summary
from streamtalk_common.tables import write_json

from .omni_client import BackendError, OmniClient
from .stt import OmniSTT


def load_frame(path: Path) -> rtc.AudioFrame:
    """The WAV as one frame at the agent's room input rate; ValueError says what a WAV must be."""
    try:
        pcm, rate = read_wav(path)
    except OSError as exc:
        raise ValueError(f"{path}: not a readable WAV ({exc})") from None
    frame = rtc.AudioFrame(pcm.tobytes(), rate, 1, len(pcm))
    if rate == INPUT_SAMPLE_RATE:
        return frame
    resampler = rtc.AudioResampler(rate, INPUT_SAMPLE_RATE)
    return rtc.combine_audio_frames([*resampler.push(frame), *resampler.flush()])


async def bench(base_url: str, paths: list[Path], *, mode: str, repeat: int, warmup: int,
                timeout_s: float) -> dict[str, Any]:
    frames = [(p, load_frame(p)) for p in paths]
    client = OmniClient(base_url, connect_timeout_s=3.0, max_retries=0)
    stt = OmniSTT(client, vad=None, mode=mode, timeout_s=timeout_s)
    times: dict[Path, list[float]] = {path: [] for path, _ in frames}
    texts: dict[str, str] = {}
    try:
        for i in range(warmup + repeat * len(frames)):
            path, frame = frames[i % len(frames)]
            t0 = time.perf_counter()
            text = await stt.transcribe_frame(frame)
            if i >= warmup:
                times[path].append((time.perf_counter() - t0) * 1000.0)
            texts[path.name] = text
    finally:
        await client.aclose()
    rows = [{"wav": path.name, "audio_s": round(frame.duration, 3), "text": texts[path.name],
             **latency_summary(times[path])} for path, frame in frames]
    return {"base_url": base_url, "mode": mode, "warmup": warmup, "repeat": repeat, "wavs": rows}


def format_table(result: dict[str, Any]) -> str:
    lines = [("wav", "audio s", "n", "P50 ms", "P95 ms", "min ms", "max ms")]
    lines += [(r["wav"], f"{r['audio_s']:.2f}", str(r["n"]), f"{r['p50_ms']:.1f}",
               f"{r['p95_ms']:.1f}", f"{r['min_ms']:.1f}", f"{r['max_ms']:.1f}")
              for r in result["wavs"]]
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    lines.insert(1, tuple("-" * w for w in widths))
    return f"mode {result['mode']}, {result['warmup']} warm-up\n" + "\n".join(
        "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                  for i, (c, w) in enumerate(zip(line, widths, strict=True)))
        for line in lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m agent.bench_stt",
                                description=__doc__.splitlines()[0])
    p.add_argument("wavs", nargs="+", type=Path, help="16-bit mono WAVs of speech")
    p.add_argument("--base-url", default="http://127.0.0.1:8000/v1", help="the Omni backend")
    p.add_argument("--mode", choices=("chat", "transcriptions"), default="chat",
                   help="the agent's OMNI_STT_MODE")
    p.add_argument("--repeat", type=int, default=10, help="recognitions of each WAV counted")
    p.add_argument("--warmup", type=int, default=2, help="recognitions first, not counted")
    p.add_argument("--timeout-s", type=float, default=15.0, help="one recognition")
    p.add_argument("--json", type=Path, help="also write the numbers here")
    a = p.parse_args(argv)
    if a.repeat < 1 or a.warmup < 0:
        p.error("--repeat must be at least 1 and --warmup at least 0")
    try:
        result = asyncio.run(bench(a.base_url, a.wavs, mode=a.mode, repeat=a.repeat,
                                   warmup=a.warmup, timeout_s=a.timeout_s))
    except (ValueError, BackendError) as exc:
        print(f"bench_stt: {exc}", file=sys.stderr)
        return 2
    write_json(a.json, result)
    print(format_table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
