"""Benchmarks: `python -m tts_engine bench <name> ...`. Each prints a table last and writes JSON.

    prepare      write a benchmark checkpoint (preset geometry, EOS row of codec_head zeroed
                 so every run has the requested length; random weights time like real ones)
    codegen      talker + predictor only: ms per frame, codegen RTF (graphs vs the same step eager)
    decoder      incremental codec decoder per packet size, offline decode, bf16 SNR vs float32
    e2e          in-process engine: TTFA and RTF per utterance length (P50/P95 after warm-up)
    throughput   against a running server: concurrency levels, audio seconds per second, TTFA
    cancel       >= 200 cancel rounds: cancel latency P95, leaked sessions and GPU memory
    launches     CUDA kernel launches per frame, eager vs graph
    graph-check  graph == eager: identical codes and PCM for the same requests

Timing: medians of repeated runs after warm-up; CUDA work is timed at natural
sync points (codes read back each frame, PCM copied to the host each packet).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

FRAME_S = 0.08
LENGTHS = {"short": 50, "medium": 210, "long": 670}
TEXTS = {
    "short": "Hello, how can I help you today?",
    "medium": "The streaming engine turns text into speech packet by packet, so the listener hears the "
              "first words while the rest of the sentence is still being generated.",
    "long": "Real-time voice agents live or die by latency. " * 6,
}


def progress(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if values else float("nan")


def environment() -> dict:
    env = {"python": platform.python_version(), "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"),
           "host_cpus": os.cpu_count()}
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
    return env


def print_table(title: str, rows: list[dict]) -> None:
    if not rows:
        print(f"{title}: no rows")
        return
    cols = list(rows[0])
    widths = {c: max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in cols}
    print(f"\n{title}")
    print("  ".join(c.ljust(widths[c]) for c in cols))
    for r in rows:
        print("  ".join(_fmt(r.get(c)).ljust(widths[c]) for c in cols))


def _fmt(v: object) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def write_json(path: str | None, name: str, rows: list[dict], extra: dict | None = None) -> None:
    if not path:
        return
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"bench": name, "env": environment(), "rows": rows, **(extra or {})}, indent=2))
    progress(f"wrote {out}")


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


# -- engine helpers ------------------------------------------------------------


def make_engine(args: argparse.Namespace, **overrides):
    from .config import EngineConfig
    from .engine import TTSEngine

    cfg = EngineConfig.from_env(model_dir=args.model_dir, device=args.device, dtype=args.dtype, **overrides)
    progress(f"loading {cfg.resolved_model_dir} on {cfg.torch_device} ({cfg.torch_dtype}) {overrides or ''}")
    engine = TTSEngine(cfg)
    progress(f"engine ready: load {engine.load_s:.1f} s, warm-up + capture {engine.warmup_s:.1f} s")
    return engine


def fixed_request(engine, length: str, frames: int | None = None):
    """A greedy request that runs exactly `frames` frames (EOS masked throughout)."""
    req = engine.make_request(TEXTS[length], "serena", "english", sample=False)
    params = dataclasses.replace(req.params, min_new_tokens=10**9)
    return dataclasses.replace(req, params=params, max_frames=frames or LENGTHS[length])


# -- prepare -------------------------------------------------------------------


def cmd_prepare(args: argparse.Namespace) -> list[dict]:
    from safetensors.torch import load_file, save_file

    from .checkpoint import CHECKPOINT_STAMP, ensure_checkpoint

    start = time.perf_counter()
    root = ensure_checkpoint(args.dir, args.preset, args.seed)
    weights_path = root / "model.safetensors"
    weights = load_file(str(weights_path))
    eos = json.loads((root / "config.json").read_text())["talker_config"]["codec_eos_token_id"]
    weights["talker.codec_head.weight"][eos] = 0
    save_file(weights, str(weights_path))
    (root / CHECKPOINT_STAMP).unlink(missing_ok=True)  # no longer the pristine preset
    rows = [{"dir": str(root), "preset": args.preset, "eos_row_zeroed": True, "seconds": time.perf_counter() - start}]
    print_table("prepared benchmark checkpoint", rows)
    return rows


# -- codegen ---------------------------------------------------------------------


def cmd_codegen(args: argparse.Namespace) -> list[dict]:
    rows = []
    variants = [("graph", 1), ("static-eager", 0)] if torch.cuda.is_available() else [("eager", 0)]
    if args.compile:
        variants = [("graph+compile", 1)]
    for name, graphs in variants:
        engine = make_engine(args, cudagraph_talker=graphs, cudagraph_cp=graphs, compile_steps=int(args.compile))
        model, frames_api = engine.model, engine.frames
        req = fixed_request(engine, "medium", args.frames)
        prompt = model.prompt(req)
        per_frame = []
        repeats = args.repeats if graphs else min(args.repeats, 2)  # eager launches are slow; fewer runs
        for rep in range(repeats + 1):
            gs = frames_api.start(prompt, req.params, args.frames, None)
            frames_api.next_frame(gs)  # prefill + frame 0 (eager) outside the timing
            sync()
            t0 = time.perf_counter()
            n = 0
            while frames_api.next_frame(gs) is not None:
                n += 1
            sync()
            dt = time.perf_counter() - t0
            frames_api.release(gs)
            if rep > 0:  # the first run is warm-up
                per_frame.append(dt / n * 1000)
            progress(f"codegen {name} run {rep}: {dt / n * 1000:.2f} ms/frame ({n} frames)")
        ms = statistics.median(per_frame)
        rows.append({"variant": name, "frames": args.frames, "ms_per_frame_p50": ms,
                     "ms_per_frame_p95": pct(per_frame, 95), "codegen_rtf": ms / 1000 / FRAME_S})
        engine.close()
    print_table("codegen only (talker + code predictor), per frame", rows)
    return rows


# -- decoder ---------------------------------------------------------------------


def cmd_decoder(args: argparse.Namespace) -> list[dict]:
    from .config import resolve_device, resolve_dtype
    from .model.codec_decoder import load_codec_decoder

    device = resolve_device(args.device or "auto")
    torch.backends.cudnn.allow_tf32 = False  # the float32 reference and path are true float32
    torch.backends.cuda.matmul.allow_tf32 = False
    st_dir = Path(args.model_dir) / "speech_tokenizer"
    ref_model = load_codec_decoder(st_dir, device, torch.float32)
    rows = []
    for dtype_name in args.dtypes:
        dtype = resolve_dtype(dtype_name, device)
        rows += _decoder_rows(args, load_codec_decoder(st_dir, device, dtype), ref_model, dtype, device)
    print_table(f"codec decoder ({args.frames} random frames)", rows)
    return rows


def _decoder_rows(args, model, ref_model, dtype, device) -> list[dict]:
    from .codec_stream import CodecStreamDecoder

    gen = torch.Generator().manual_seed(0)
    frames = args.frames
    codes = torch.randint(0, 2048, (1, 16, frames), generator=gen).to(device)
    rows = []
    with torch.no_grad():
        offline32 = ref_model(codes)[0].float()
        for packet in (1, 2, 4, 8):
            dec = CodecStreamDecoder(model)
            times, outs = [], []
            for rep in range(args.repeats + 1):
                state = dec.new_state(1)
                outs = []
                for t in range(0, frames, packet):
                    chunk = codes[:, :, t:t + packet]
                    sync()
                    t0 = time.perf_counter()
                    outs.append(dec.step(state, chunk))
                    sync()
                    if rep > 0:
                        times.append((time.perf_counter() - t0) * 1000)
            pcm = torch.cat(outs, dim=1)[0].float()
            err = pcm - offline32
            snr = 10 * np.log10(float((offline32**2).sum()) / max(float((err**2).sum()), 1e-30))
            rows.append({"mode": f"incremental packet {packet}", "dtype": str(dtype).replace("torch.", ""),
                         "ms_per_packet_p50": statistics.median(times), "ms_per_frame": statistics.median(times) / packet,
                         "snr_vs_fp32_offline_db": snr, "max_abs_err": float(err.abs().max())})
            progress(f"decoder packet {packet}: {rows[-1]['ms_per_packet_p50']:.2f} ms/packet, SNR {snr:.1f} dB")
        times = []
        for rep in range(args.repeats + 1):
            sync()
            t0 = time.perf_counter()
            model(codes)
            sync()
            if rep > 0:
                times.append((time.perf_counter() - t0) * 1000)
        rows.append({"mode": f"offline {frames} frames", "dtype": str(dtype).replace("torch.", ""),
                     "ms_per_packet_p50": statistics.median(times), "ms_per_frame": statistics.median(times) / frames,
                     "snr_vs_fp32_offline_db": float("nan"), "max_abs_err": float("nan")})
    return rows


# -- e2e -------------------------------------------------------------------------


def cmd_e2e(args: argparse.Namespace) -> list[dict]:
    # one engine per --overlap variant; their runs alternate, so drift hits all alike
    engines = [make_engine(args, compile_steps=int(args.compile), decode_overlap=v) for v in args.overlap]
    rows = []
    for length in args.lengths:
        ttfa: list[list[float]] = [[] for _ in engines]
        rtf: list[list[float]] = [[] for _ in engines]
        for rep in range(args.repeats + 1):
            for i, engine in enumerate(engines):
                _, m = engine.synthesize_blocking(fixed_request(engine, length))
                if rep > 0:
                    ttfa[i].append(m.ttfa_ms)
                    rtf[i].append(m.rtf)
                progress(f"e2e {length} overlap={engine.decode_overlap} run {rep}: TTFA {m.ttfa_ms:.1f} ms "
                         f"RTF {m.rtf:.3f} graphs {m.graph_stats}")
        for i, engine in enumerate(engines):
            rows.append({"length": length, "frames": LENGTHS[length], "compiled": bool(args.compile),
                         "decode_overlap": engine.decode_overlap, "ttfa_ms_p50": pct(ttfa[i], 50),
                         "ttfa_ms_p95": pct(ttfa[i], 95), "rtf_p50": pct(rtf[i], 50), "rtf_p95": pct(rtf[i], 95),
                         "runs": len(ttfa[i])})
    for engine in engines:
        engine.close()
    print_table("end to end in process (server-side TTFA = request accepted -> first PCM packet)", rows)
    return rows


# -- throughput ------------------------------------------------------------------


async def _client_loop(session, url: str, body: dict, deadline: float, results: list) -> None:
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        first = None
        size = 0
        async with session.post(url + "/tts/stream", json=body) as r:
            if r.status != 200:
                results.append({"error": r.status})
                continue
            async for chunk in r.content.iter_any():
                if first is None:
                    first = time.perf_counter() - t0
                size += len(chunk)
        wall = time.perf_counter() - t0
        audio = size / 2 / 24000
        results.append({"ttfb_ms": (first or wall) * 1000, "wall_s": wall, "audio_s": audio})


async def _throughput(url: str, concurrency: int, duration: float, body: dict) -> dict:
    import aiohttp

    results: list[dict] = []
    deadline = time.perf_counter() + duration
    timeout = aiohttp.ClientTimeout(total=duration + 300)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        t0 = time.perf_counter()
        await asyncio.gather(*[_client_loop(session, url, body, deadline, results) for _ in range(concurrency)])
        wall = time.perf_counter() - t0
    ok = [r for r in results if "error" not in r]
    audio = sum(r["audio_s"] for r in ok)
    return {"concurrency": concurrency, "requests": len(ok), "errors": len(results) - len(ok),
            "audio_s_per_s": audio / wall, "ttfb_ms_p50": pct([r["ttfb_ms"] for r in ok], 50),
            "ttfb_ms_p95": pct([r["ttfb_ms"] for r in ok], 95),
            "rtf_p50": pct([r["wall_s"] / r["audio_s"] for r in ok if r["audio_s"]], 50),
            "rtf_p95": pct([r["wall_s"] / r["audio_s"] for r in ok if r["audio_s"]], 95)}


def cmd_throughput(args: argparse.Namespace) -> list[dict]:
    body = {"text": TEXTS[args.length], "speaker": "serena", "language": "english"}
    rows = []
    for c in args.concurrency:
        progress(f"throughput: concurrency {c} for {args.duration} s against {args.url}")
        rows.append(asyncio.run(_throughput(args.url, c, args.duration, body)))
    print_table(f"throughput against {args.url} ({args.length} text; client-side time to first byte)", rows)
    return rows


# -- cancel ----------------------------------------------------------------------


def cmd_cancel(args: argparse.Namespace) -> list[dict]:
    engine = make_engine(args)
    cuda = torch.cuda.is_available()

    async def rounds(n: int) -> list[float]:
        latencies = []
        for i in range(n):
            handle = engine.open_stream(fixed_request(engine, "long"))
            async for _ in handle:
                break
            t0 = time.perf_counter()
            handle.cancel()
            while not handle.session.finished:
                await asyncio.sleep(0.0002)
            latencies.append((time.perf_counter() - t0) * 1000)
            if i % 50 == 0:
                progress(f"cancel round {i}: {latencies[-1]:.2f} ms")
        return latencies

    asyncio.run(rounds(20))  # warm-up of the same path (graphs, allocator)
    sync()
    mem_before = torch.cuda.memory_allocated() if cuda else 0
    latencies = asyncio.run(rounds(args.rounds))
    sync()
    mem_after = torch.cuda.memory_allocated() if cuda else 0
    rows = [{"rounds": len(latencies), "cancel_ms_p50": pct(latencies, 50), "cancel_ms_p95": pct(latencies, 95),
             "cancel_ms_max": max(latencies), "leaked_sessions": engine.active_sessions,
             "gpu_mem_delta_mib": (mem_after - mem_before) / 2**20}]
    engine.close()
    print_table("cancel stress (cancel() -> session freed)", rows)
    return rows


# -- launches --------------------------------------------------------------------


def cmd_launches(args: argparse.Namespace) -> list[dict]:
    from torch.profiler import ProfilerActivity, profile

    if not torch.cuda.is_available():
        raise SystemExit("bench launches needs CUDA")
    rows = []
    for name, graphs in (("graph", 1), ("static-eager", 0)):
        engine = make_engine(args, cudagraph_talker=graphs, cudagraph_cp=graphs)
        req = fixed_request(engine, "short", 40)
        gs = engine.frames.start(engine.model.prompt(req), req.params, 40, None)
        for _ in range(5):
            engine.frames.next_frame(gs)
        sync()
        n = 10
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for _ in range(n):
                engine.frames.next_frame(gs)
            sync()
        engine.frames.release(gs)
        events = prof.key_averages()
        launches = sum(e.count for e in events if e.key in ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC"))
        graph_launches = sum(e.count for e in events if e.key == "cudaGraphLaunch")
        kernels = sum(e.count for e in events if e.device_type == torch.autograd.DeviceType.CUDA)
        rows.append({"variant": name, "host_kernel_launches_per_frame": launches / n,
                     "graph_launches_per_frame": graph_launches / n, "gpu_kernels_per_frame": kernels / n})
        engine.close()
    print_table("kernel launches per frame", rows)
    return rows


# -- graph == eager --------------------------------------------------------------


def cmd_graph_check(args: argparse.Namespace) -> list[dict]:
    outputs = {}
    for name, graphs in (("graph", 1), ("static-eager", 0)):
        engine = make_engine(args, cudagraph_talker=graphs, cudagraph_cp=graphs)
        outs = []
        for length in ("short", "medium"):
            pcm, m = engine.synthesize_blocking(fixed_request(engine, length, 120))
            outs.append((pcm, m.graph_stats))
        outputs[name] = outs
        engine.close()
    rows = []
    for i, length in enumerate(("short", "medium")):
        (g, gstats), (e, _) = outputs["graph"][i], outputs["static-eager"][i]
        rows.append({"case": length, "identical_pcm": bool(np.array_equal(g, e)),
                     "max_abs_diff": float(np.abs(g - e).max()) if g.shape == e.shape else float("inf"),
                     "graph_steps": gstats.get("graph_steps"), "eager_steps_in_graph_run": gstats.get("eager_steps")})
    print_table("CUDA graph vs the same static step run eagerly", rows)
    return rows


COMMANDS = {
    "prepare": cmd_prepare, "codegen": cmd_codegen, "decoder": cmd_decoder, "e2e": cmd_e2e,
    "throughput": cmd_throughput, "cancel": cmd_cancel, "launches": cmd_launches, "graph-check": cmd_graph_check,
}


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="benchmarks (each prints a table and writes JSON)")
    bsub = p.add_subparsers(dest="bench", required=True)

    def common(q, model=True):
        if model:
            q.add_argument("--model-dir", required=True)
            q.add_argument("--device", default=None)
            q.add_argument("--dtype", default=None)
        q.add_argument("--out", default=None, help="JSON output path")
        q.add_argument("--repeats", type=int, default=5)

    q = bsub.add_parser("prepare")
    q.add_argument("dir")
    q.add_argument("--preset", default="0.6b", choices=["tiny", "0.6b", "1.7b"])
    q.add_argument("--seed", type=int, default=0)
    common(q, model=False)
    q = bsub.add_parser("codegen")
    common(q)
    q.add_argument("--frames", type=int, default=200)
    q.add_argument("--compile", action="store_true", help="time only the torch.compile'd graph variant")
    q = bsub.add_parser("decoder")
    common(q)
    q.add_argument("--frames", type=int, default=200)
    q.add_argument("--dtypes", nargs="+", default=["bfloat16", "float32"])
    q = bsub.add_parser("e2e")
    common(q)
    q.add_argument("--compile", action="store_true", help="fuse the frame steps with torch.compile")
    q.add_argument("--lengths", nargs="+", default=list(LENGTHS), choices=list(LENGTHS))
    q.add_argument("--overlap", nargs="+", default=[None], choices=["auto", "on", "off"],
                   help="TTS_DECODE_OVERLAP per engine; several = an A/B with alternating runs")
    q = bsub.add_parser("throughput")
    common(q, model=False)
    q.add_argument("--url", default="http://127.0.0.1:9000")
    q.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    q.add_argument("--duration", type=float, default=30.0)
    q.add_argument("--length", default="medium", choices=list(LENGTHS))
    q = bsub.add_parser("cancel")
    common(q)
    q.add_argument("--rounds", type=int, default=200)
    q = bsub.add_parser("launches")
    common(q)
    q = bsub.add_parser("graph-check")
    common(q)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    rows = COMMANDS[args.bench](args)
    write_json(args.out, args.bench, rows, {"args": {k: v for k, v in vars(args).items() if k != "func"}})
    return 0
