"""Codec decoder speed as a real-time factor (RTF = wall seconds / audio seconds).

Times one offline decode of the whole utterance and the exact incremental decoder at
several packet sizes (and batch sizes), after a warm-up; prints a table and writes
JSON. Compute does not depend on weight values, so random weights time honestly.

    python -m tools.bench_codec_decoder --preset tiny --seconds 10 --threads 1
    python -m tools.bench_codec_decoder --preset full --device cuda --dtype bfloat16
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from datetime import date
from pathlib import Path

import torch

from streamtalk_common.paths import output_root
from streamtalk_common.tables import write_json
from tts_engine.codec_checkpoint import SPEECH_TOKENIZER_PRESETS, build_random_codec_decoder
from tts_engine.codec_stream import CodecStreamDecoder

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
FRAME_S = 0.08


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench(model: torch.nn.Module, frames: int, packets: list[int],
          batches: list[int], repeat: int) -> list[dict]:
    device = next(model.parameters()).device
    cfg = model.config
    rows = []
    stream = CodecStreamDecoder(model)
    for batch in batches:
        codes = torch.randint(0, cfg.codebook_size, (batch, cfg.num_quantizers, frames),
                              device=device)
        audio_s = frames * FRAME_S  # per stream; the batch makes `batch` times as much
        with torch.no_grad():
            model(codes[:, :, : min(frames, 8)])  # warm-up
        walls = []
        for _ in range(repeat):
            _sync(device)
            start = time.perf_counter()
            with torch.no_grad():
                model(codes)
            _sync(device)
            walls.append(time.perf_counter() - start)
        wall = statistics.median(walls)
        rows.append({"mode": "offline", "batch": batch, "packet": frames, "rtf": wall / audio_s,
                     "ms_per_step": wall * 1000, "wall_s": wall})
        for packet in packets:
            state = stream.new_state(batch)
            for start in range(0, min(frames, 4 * packet), packet):  # warm-up
                stream.step(state, codes[:, :, start : start + packet])
            walls, steps = [], []
            for _ in range(repeat):
                state = stream.new_state(batch)
                _sync(device)
                t0 = time.perf_counter()
                for start in range(0, frames, packet):
                    s0 = time.perf_counter()
                    stream.step(state, codes[:, :, start : start + packet])
                    _sync(device)
                    steps.append(time.perf_counter() - s0)
                walls.append(time.perf_counter() - t0)
            wall = statistics.median(walls)
            rows.append({"mode": "incremental", "batch": batch, "packet": packet,
                         "rtf": wall / audio_s, "ms_per_step": statistics.median(steps) * 1000,
                         "wall_s": wall})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=SPEECH_TOKENIZER_PRESETS, default="tiny")
    parser.add_argument("--seconds", type=float, default=10.0, help="audio per stream")
    parser.add_argument("--packets", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--batches", type=int, nargs="+", default=[1])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=DTYPES, default="float32")
    parser.add_argument("--json", type=Path,
                        help="default: $STREAMTALK_OUTPUT/bench/codec_decoder.json")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    model = build_random_codec_decoder(args.preset).to(args.device, DTYPES[args.dtype])
    frames = max(1, round(args.seconds / FRAME_S))
    rows = bench(model, frames, args.packets, args.batches, args.repeat)
    device = (torch.cuda.get_device_name(args.device) if args.device.startswith("cuda")
              else platform.processor() or "cpu")
    meta = {"date": date.today().isoformat(), "preset": args.preset, "frames": frames,
            "device": device, "dtype": args.dtype, "threads": torch.get_num_threads(),
            "torch": torch.__version__, "load_avg": os.getloadavg()[0]}
    print(f"codec decoder, preset {args.preset}, {frames} frames/stream, {device}, {args.dtype}, "
          f"{meta['threads']} threads, load {meta['load_avg']:.1f}, {meta['date']}")
    print("| mode | batch | packet | RTF | ms/step |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['mode']} | {r['batch']} | {r['packet']} | {r['rtf']:.4f} | "
              f"{r['ms_per_step']:.2f} |")
    out = args.json or output_root() / "bench" / "codec_decoder.json"
    write_json(out, {"meta": meta, "rows": rows})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
