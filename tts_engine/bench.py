"""Benchmarks: `python -m tts_engine bench <name> ...`. Each prints a table last and writes JSON.

    prepare      write a benchmark checkpoint (preset geometry, EOS row of codec_head zeroed
                 so every run has the requested length; random weights time like real ones)
    step         the batched engine step per batch size and decoder precision: ms per step, its
                 launch (host), codegen and decode parts (device), audio s/s (graphs vs eager)
    decoder      codec decoder per precision (float32, tf32, bfloat16): SNR vs the float32 offline
                 decode and ms per packet, per batched frame and offline
    e2e          in-process engine: its start-up phases (load, compile, warm-up, capture,
                 calibration; with --compile what came from the compile cache), then TTFA and
                 RTF per utterance length (P50/P95 after warm-up)
    metrics      per-packet metrics (TTS_DEEP_STREAM_METRICS) on against off, alternating in one
                 engine: TTFA, RTF and ms per frame at each concurrency, and their difference
    memory       the engine's start-up GPU memory per maximum batch (one fresh process each):
                 weights, rows, graphs, workspace, reserved and its peak
    throughput   against a running server: a concurrency ladder (closed loop), or with --rate
                 Poisson arrivals (open loop, mixed reply lengths); audio s/s, client TTFB and
                 server TTFA P50/P95/P99, RTF, underruns (client and engine side), 503
                 refusals, the engine's mean step period, device ms, hand-over ms and batch,
                 its mean admission (and its prompts' part), group and share of prompts
                 built ahead, its capacity (lowest during the level, and at its end; from
                 /metrics), peak GPU memory
    cancel       1000 cancel rounds at concurrency 16: cancel latency P95, leaked sessions,
                 GPU memory
    divergence   default mode: share of streams whose codes differ from their solo run, and from
                 which frame, at concurrency 16 and 64
    invariance   batch-invariant mode's proof: 32 requests (greedy and seeded sampling) solo, then
                 in random mixes of 2, 16, 64 and 256 streams, and a mix without graphs: PCM
                 bit-identical to the solo run in every case (exit status 1 if not)
    launches     CUDA kernel launches per frame, eager vs graph
    profile      a graph-replayed frame's device time per batch size: kernels per frame and
                 their time by family (GEMM, attention, inductor's fused kernels, ...) and the
                 largest kernels one by one

Timing: medians of repeated runs after warm-up; CUDA work is timed at natural
sync points (codes read back each frame, PCM copied to the host each packet).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import multiprocessing
import os
import platform
import random
import re
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

from streamtalk_common.audio import PCM16_BYTES, SAMPLE_RATE, SAMPLES_PER_FRAME
from streamtalk_common.stats import percentile
from streamtalk_common.tables import print_table, write_json

from .config import DECODER_DTYPES, EngineConfig
from .errors import EngineStartError
from .runtime.session import PLAYOUT_BUFFER_S

FRAME_S = SAMPLES_PER_FRAME / SAMPLE_RATE
PCM_BYTES_PER_S = SAMPLE_RATE * PCM16_BYTES  # the /tts/stream body: mono int16
LENGTHS = {"short": 50, "medium": 210, "long": 670}
TEXTS = {
    "short": "Hello, how can I help you today?",
    "medium": "The streaming engine turns text into speech packet by packet, so the listener "
              "hears the first words while the rest of the sentence is still being generated.",
    "long": "Real-time voice agents live or die by latency. " * 6,
}
# Benchmarks of something other than admission start all their streams at once: no
# real-time gate, and a queue that waits for every row.
UNGATED = {"admission": "rows", "queue_timeout_s": 600}
# Open-loop reply lengths: a voice agent's replies are mostly one or two sentences.
REPLY_MIX = {"short": 0.4, "medium": 0.45, "long": 0.15}


def progress(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def pct(values: list[float], q: float) -> float:
    """The linear percentile, NaN (not None) for no values: the tables print it as such."""
    value = percentile(values, q)
    return float("nan") if value is None else value


def environment() -> dict:
    env = {"python": platform.python_version(), "torch": torch.__version__,
           "date": time.strftime("%Y-%m-%d"), "host_cpus": os.cpu_count()}
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
    return env


def write_result(path: str | None, name: str, rows: list[dict], extra: dict | None = None) -> None:
    """A benchmark's result as JSON at `path` (None: nowhere): its name, the environment, its
    rows and `extra`."""
    if path:
        write_json(Path(path), {"bench": name, "env": environment(), "rows": rows, **(extra or {})})
        progress(f"wrote {path}")


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


# -- engine helpers ------------------------------------------------------------


def make_engine(args: argparse.Namespace, **overrides):
    from .runtime import TTSEngine

    cfg = EngineConfig.from_env(model_dir=args.model_dir, device=args.device, dtype=args.dtype,
                                **overrides)
    progress(f"loading {cfg.resolved_model_dir} on {cfg.torch_device} ({cfg.torch_dtype}) "
             f"{overrides or ''}")
    engine = TTSEngine(cfg)
    phases = engine.startup_report()
    progress("engine ready: " + ", ".join(f"{k} {v:.1f}" for k, v in phases.items()
                                          if k != "compile"))
    return engine


def fixed_request(engine, length: str, frames: int | None = None, speaker: str = "serena"):
    """A greedy request that runs exactly `frames` frames (EOS masked throughout)."""
    req = engine.make_request(TEXTS[length], speaker, "english", sample=False)
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
    rows = [{"dir": str(root), "preset": args.preset, "eos_row_zeroed": True,
             "seconds": time.perf_counter() - start}]
    print_table("prepared benchmark checkpoint", rows)
    return rows


# -- codegen ---------------------------------------------------------------------


def cmd_step(args: argparse.Namespace) -> list[dict]:
    """The batched engine step (talker + predictor + decoder, one frame for each of b streams)
    on idle rows, per batch size and decoder precision: ms per step, the host's launch of it
    (graph replays and copies; on a GPU the engine's hand-over of packets overlaps the rest,
    on a CPU the launch computes the step), the codegen and decode parts (device time), and
    the real-time streams it implies."""
    rows = []
    graph_modes = ([("graph", True), ("eager", False)] if torch.cuda.is_available()
                   else [("eager", False)])
    graph_modes = [m for m in graph_modes if m[0] in args.variants]
    for name, graphs in graph_modes:
        for decoder_dtype in args.decoder_dtypes:
            engine = make_engine(args, cuda_graphs=graphs, max_batch=max(args.batch),
                                 decoder_dtype=decoder_dtype)
            for b in args.batch:
                times, launch, codegen, decode = [], [], [], []
                for rep in range(args.repeats + 2):
                    sync()
                    t0 = time.perf_counter()
                    engine.stepper.launch(b, [256] * b, mixed=False)
                    t1 = time.perf_counter()
                    result = engine.stepper.collect()
                    if rep >= 2:  # two warm-up steps
                        times.append((time.perf_counter() - t0) * 1000)
                        launch.append((t1 - t0) * 1000)
                        codegen.append(result.codegen_ms)
                        decode.append(result.decode_ms)
                ms = statistics.median(times)
                rows.append({"variant": name, "decoder": decoder_dtype, "batch": b,
                             "ms_per_step_p50": ms, "ms_per_step_p95": pct(times, 95),
                             "launch_ms_p50": statistics.median(launch),
                             "codegen_ms_p50": statistics.median(codegen),
                             "decode_ms_p50": statistics.median(decode),
                             "audio_s_per_s": b * FRAME_S * 1000 / ms,
                             "per_stream_rtf": ms / 1000 / FRAME_S})
                progress(f"step {name} decoder {decoder_dtype} batch {b}: {ms:.2f} ms (launch "
                         f"{rows[-1]['launch_ms_p50']:.2f}, "
                         f"codegen {rows[-1]['codegen_ms_p50']:.2f}, "
                         f"decode {rows[-1]['decode_ms_p50']:.2f})")
            engine.close()
    print_table("batch step (one 80 ms frame for each stream: talker + predictor + decoder)", rows)
    return rows


# -- decoder ---------------------------------------------------------------------


def cmd_decoder(args: argparse.Namespace) -> list[dict]:
    """Each decoder precision against the true-float32 offline decode: SNR and ms per
    packet (one stream, packets of 1..8 frames), per batched frame (b streams at once,
    as the engine steps them) and offline."""
    from .config import resolve_device, resolve_dtype
    from .model.codec_decoder import load_codec_decoder

    device = resolve_device(args.device or "auto")
    st_dir = Path(args.model_dir) / "speech_tokenizer"
    ref_model = load_codec_decoder(st_dir, device, torch.float32)
    gen = torch.Generator().manual_seed(0)
    codes = torch.randint(0, 2048, (max(args.batch), 16, args.frames), generator=gen).to(device)
    # strict float32: one stream's whole codes, then every stream's first frames
    with torch.no_grad():
        reference = ref_model(codes[:1])
        batched_reference = torch.cat([ref_model(part)
                                       for part in codes[:, :, :BATCHED_FRAMES].split(16)])
    rows = []
    for name in args.dtypes:
        model = load_codec_decoder(st_dir, device, resolve_dtype(name, device))
        rows += _decoder_rows(args, model, name, codes, reference, batched_reference)
    print_table(f"codec decoder ({args.frames} random frames) vs the float32 offline decode", rows)
    return rows


BATCHED_FRAMES = 24  # frames of each stream in the batched decoder rows


def _snr_db(pcm: torch.Tensor, reference: torch.Tensor) -> float:
    """The worst row's SNR."""
    err = (pcm.float() - reference).pow(2).sum(-1).clamp(min=1e-30)
    return float((10 * torch.log10(reference.pow(2).sum(-1) / err)).min())


def _decode_in_steps(decoder, codes: torch.Tensor, packet: int,
                     repeats: int) -> tuple[torch.Tensor, list[float]]:
    """Decode codes [B, 16, T] `packet` frames per step, `repeats` + 1 times (the first
    untimed): the PCM and the ms of every timed step."""
    times: list[float] = []
    for rep in range(repeats + 1):
        state = decoder.new_state(codes.shape[0])
        outs = []
        for t in range(0, codes.shape[2], packet):
            sync()
            t0 = time.perf_counter()
            outs.append(decoder.step(state, codes[:, :, t:t + packet]))
            sync()
            if rep > 0:
                times.append((time.perf_counter() - t0) * 1000)
    return torch.cat(outs, dim=1), times


def _decoder_rows(args, model, name: str, codes: torch.Tensor, reference: torch.Tensor,
                  batched_reference: torch.Tensor) -> list[dict]:
    from .codec_stream import CodecStreamDecoder

    decoder = CodecStreamDecoder(model, tf32=name == "tf32")
    rows = []

    def row(mode: str, batch: int, frames_per_step: int, times: list[float], snr: float) -> None:
        ms = statistics.median(times)
        rows.append({"mode": mode, "decoder": name, "batch": batch, "ms_per_step_p50": ms,
                     "ms_per_frame": ms / frames_per_step, "snr_vs_fp32_offline_db": snr})
        progress(f"decoder {name} {mode} batch {batch}: {ms:.2f} ms per step, SNR {snr:.1f} dB")

    with torch.no_grad():
        for packet in (1, 2, 4, 8):
            pcm, times = _decode_in_steps(decoder, codes[:1], packet, args.repeats)
            row(f"incremental packet {packet}", 1, packet, times, _snr_db(pcm, reference))
        for b in args.batch:  # one frame of b streams per step, as the engine runs it
            pcm, times = _decode_in_steps(decoder, codes[:b, :, :BATCHED_FRAMES], 1, 1)
            row("incremental frame, batched", b, 1, times, _snr_db(pcm, batched_reference[:b]))
        if name == "tf32":  # the offline decode always runs in true float32
            return rows
        times = []
        for rep in range(args.repeats + 1):
            sync()
            t0 = time.perf_counter()
            model(codes[:1])
            sync()
            if rep > 0:
                times.append((time.perf_counter() - t0) * 1000)
        row(f"offline {args.frames} frames", 1, args.frames, times, float("nan"))
    return rows


# -- e2e -------------------------------------------------------------------------


def cmd_e2e(args: argparse.Namespace) -> tuple[list[dict], dict]:
    engine = make_engine(args, compile_steps="1" if args.compile else "0")
    startup = engine.startup_report()
    rows = []
    for length in args.lengths:
        ttfa: list[float] = []
        rtf: list[float] = []
        for rep in range(args.repeats + 1):
            _, m = engine.synthesize_blocking(fixed_request(engine, length))
            if rep > 0:
                ttfa.append(m.ttfa_ms)
                rtf.append(m.rtf)
            progress(f"e2e {length} run {rep}: TTFA {m.ttfa_ms:.1f} ms RTF {m.rtf:.3f} "
                     f"graphs {m.graph_stats}")
        rows.append({"length": length, "frames": LENGTHS[length], "compiled": bool(args.compile),
                     "ttfa_ms_p50": pct(ttfa, 50), "ttfa_ms_p95": pct(ttfa, 95),
                     "rtf_p50": pct(rtf, 50), "rtf_p95": pct(rtf, 95), "runs": len(ttfa)})
    engine.close()
    phases = {k: v for k, v in startup.items() if k != "compile"}
    cache = startup["compile"] or {}
    print_table("engine start-up, seconds per phase", [{
        "compiled": bool(args.compile), "rows": engine.pool.rows,
        "buckets": len(engine.stepper.buckets), **phases,
        **{k: cache[k] for k in ("graphs", "fx_graph_cache_hits", "fx_graph_cache_misses",
                                 "artefacts_loaded")
           if k in cache}}])
    print_table("end to end in process (server-side TTFA = request accepted -> first PCM packet)",
                rows)
    return rows, {"startup": startup}


# -- per-packet metrics ------------------------------------------------------------


async def _streams_at_once(engine, concurrency: int, length: str) -> tuple[list, float]:
    """`concurrency` fixed-length streams opened together, read to the end: their metrics
    and the wall time from the first open to the last close."""
    t0 = time.perf_counter()
    handles = [engine.open_stream(fixed_request(engine, length)) for _ in range(concurrency)]

    async def drain(handle):
        async for _ in handle:
            pass
        return await handle.closed()

    metrics = await asyncio.gather(*[drain(h) for h in handles])
    return metrics, time.perf_counter() - t0


def _metrics_row(concurrency: int, variant: str, rounds: list[tuple[list, float]],
                 frames: int) -> dict:
    streams = [m for metrics, _ in rounds for m in metrics]
    ttfa = [m.ttfa_ms for m in streams]
    return {"concurrency": concurrency, "packet_metrics": variant, "ttfa_ms_p50": pct(ttfa, 50),
            "ttfa_ms_p95": pct(ttfa, 95), "rtf_p50": pct([m.rtf for m in streams], 50),
            "ms_per_frame_p50": statistics.median(wall * 1000 / frames for _, wall in rounds),
            "packets_logged_per_stream": statistics.mean(len(m.packet_log) for m in streams),
            "rounds": len(rounds)}


def cmd_metrics(args: argparse.Namespace) -> list[dict]:
    """Per-packet metrics on against off in one engine, rounds alternating on/off then
    off/on (drift cancels): at each concurrency, that many streams of one length at once.
    ms per frame = a round's wall time / its frames: one batch step per frame, with the
    hand-over of every stream's frame, where the per-packet work runs."""
    engine = make_engine(args, max_batch=max(args.concurrency), **UNGATED)
    frames = LENGTHS[args.length]
    rows = []
    for c in args.concurrency:
        rounds: dict[bool, list] = {True: [], False: []}
        for rep in range(args.repeats + 1):  # the first round of each is a warm-up
            for on in ((True, False) if rep % 2 == 0 else (False, True)):
                # the worker reads the flag per packet; between rounds no stream runs
                engine.config = dataclasses.replace(engine.config, packet_metrics=int(on))
                metrics, wall = asyncio.run(_streams_at_once(engine, c, args.length))
                progress(f"metrics {'on' if on else 'off'} concurrency {c} round {rep}: "
                         f"{wall * 1000 / frames:.2f} ms per frame")
                if rep > 0:
                    rounds[on].append((metrics, wall))
        on, off = (_metrics_row(c, "on", rounds[True], frames),
                   _metrics_row(c, "off", rounds[False], frames))
        diff = {k: on[k] - off[k]
                for k in ("ttfa_ms_p50", "ttfa_ms_p95", "rtf_p50", "ms_per_frame_p50")}
        rows += [on, off, {"concurrency": c, "packet_metrics": "on - off", **diff,
                           "packets_logged_per_stream": None, "rounds": None}]
    engine.close()
    print_table(f"per-packet metrics on vs off ({args.length} replies of {frames} frames, "
                f"ms per frame = round wall / frames)", rows)
    return rows


# -- memory ----------------------------------------------------------------------

MEMORY_COLUMNS = ("max_batch", "rows_x_positions", "weights_mib", "rows_mib", "row_pool_mib",
                  "graphs_mib", "workspace_mib", "reserved_mib", "peak_reserved_mib",
                  "outside_torch_mib", "capacity", "start_s", "error")


def _engine_memory(model_dir: str, device: str | None, dtype: str | None, max_batch: int) -> dict:
    """Start an engine of `max_batch` rows (default configuration otherwise) and return its
    memory account; meant for a fresh process, whose allocator holds nothing else."""
    from .runtime import TTSEngine

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    cfg = EngineConfig.from_env(model_dir=model_dir, device=device, dtype=dtype,
                                max_batch=max_batch)
    try:
        engine = TTSEngine(cfg)
    except EngineStartError as exc:  # too many rows for this card: the table says so
        return {"error": str(exc)}
    account = engine.memory
    engine.close()
    return {**account.to_dict(), "capacity": engine.capacity, "load_s": engine.load_s,
            "warmup_s": engine.warmup_s}


def cmd_memory(args: argparse.Namespace) -> list[dict]:
    """The engine's start-up memory per maximum batch (TTS_MAX_BATCH), each in a fresh
    process. outside_torch = the card's used memory less torch's reserve: the CUDA
    context and libraries when nothing else runs on the card."""
    rows = []
    for n in args.max_batch:
        progress(f"memory: an engine of {n} rows in a fresh process")
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            m = pool.submit(_engine_memory, args.model_dir, args.device, args.dtype, n).result()
        if "error" in m:
            progress(f"memory: {n} rows did not start: {m['error']}")
            rows.append({"max_batch": n, "error": m["error"]})
            continue
        used = m["device_total_mib"] - m["device_free_mib"]
        rows.append({"max_batch": n, "rows_x_positions": f"{m['rows']} x {m['positions']}", **m,
                     "outside_torch_mib": used - m["reserved_mib"],
                     "start_s": m["load_s"] + m["warmup_s"], "error": None})
        progress(f"memory {n} rows: "
                 + ", ".join(f"{k} {rows[-1][k]:.0f}" for k in MEMORY_COLUMNS[2:10]))
    print_table("engine memory at start-up per maximum batch (MiB; peak_reserved = weights + "
                "rows + graphs + workspace)",
                [{k: r.get(k) for k in MEMORY_COLUMNS} for r in rows])
    return rows


# -- throughput ------------------------------------------------------------------


async def _client_loop(session, url: str, length: str, deadline: float, results: list) -> None:
    while time.perf_counter() < deadline:
        results.append(await _one_request(session, url, _tts_body(length), LENGTHS[length]))


async def _one_request(session, url: str, body: dict, frames: int) -> dict:
    """One /tts/stream request: client TTFB, wall, audio and underruns (a chunk that arrives
    after its playback time, playback starting 150 ms after the first chunk; the first late
    chunk's place in the audio, s, tells a young stream's stall from a later one), plus the
    server's own metrics of it (TTFA, queue wait, and its underruns: packets the engine made
    after their playback time, so the rest were late on the way to the client). The client
    hangs up after `frames` frames of audio: a benchmark checkpoint never ends a reply by
    itself, so this sets its length."""
    t0 = time.perf_counter()
    first = None
    size = 0
    underruns = 0
    first_late_s = None
    async with session.post(url + "/tts/stream", json=body) as r:
        if r.status != 200:
            await r.read()
            return {"error": r.status}
        request_id = r.headers.get("X-Request-Id", "")
        async for chunk in r.content.iter_any():
            now = time.perf_counter()
            if first is None:
                first = now
            elif now > first + PLAYOUT_BUFFER_S + size / PCM_BYTES_PER_S:
                underruns += 1
                if first_late_s is None:
                    first_late_s = size / PCM_BYTES_PER_S
            size += len(chunk)
            if size >= frames * SAMPLES_PER_FRAME * PCM16_BYTES:
                break
    wall = time.perf_counter() - t0
    server = await _server_metrics(session, url, request_id)
    return {"ttfb_ms": ((first or t0 + wall) - t0) * 1000, "wall_s": wall,
            "audio_s": size / PCM_BYTES_PER_S, "underruns": underruns,
            "first_underrun_at_s": first_late_s, "server_ttfa_ms": server.get("ttfa_ms"),
            "queue_wait_ms": server.get("queue_wait_ms"),
            "server_underruns": server.get("underruns", 0)}


async def _server_metrics(session, url: str, request_id: str) -> dict:
    """GET /tts/requests/{id}; the server files a request's metrics just after its last byte."""
    for _ in range(50):
        async with session.get(f"{url}/tts/requests/{request_id}") as r:
            if r.status == 200:
                return await r.json()
        await asyncio.sleep(0.01)
    return {}


async def _engine_gauges(session, url: str) -> dict[str, float]:
    """The engine's gauges on the server's /metrics, by name."""
    async with session.get(url + "/metrics") as r:
        lines = (await r.text()).splitlines()
    return {name: float(value) for name, value in
            (line.split()[:2] for line in lines if line.startswith("tts_engine_"))}


# The engine's sums on /metrics, by the count they are averaged over between two readings.
ENGINE_SUMS = {
    "tts_engine_steps": {"step_period_ms": "tts_engine_step_period_ms_sum",
                         "step_device_ms": "tts_engine_step_device_ms_sum",
                         "hand_over_ms": "tts_engine_step_hand_over_ms_sum",
                         "settle_ms": "tts_engine_step_settle_ms_sum",
                         "mean_batch": "tts_engine_step_rows_sum"},
    "tts_engine_admissions": {"admission_ms": "tts_engine_admission_ms_sum",
                              "mean_group": "tts_engine_admitted_sum",
                              "admission_prompt_ms": "tts_engine_admission_prompt_ms_sum"},
    "tts_engine_admitted_sum": {"prompts_ahead_share": "tts_engine_prompts_built_ahead"},
}
# The engine's counters on /metrics, as their increase over a level: the worker's turns
# longer than a frame (the server's log says what each spent its time on) and the garbage
# collector's pauses (every thread stands still during one).
LEVEL_COUNTS = {"slow_turns": "tts_engine_slow_turns", "gc_pauses": "tts_engine_gc_pauses",
                "gc_full": "tts_engine_gc_full_collections",
                "gc_pause_ms": "tts_engine_gc_pause_ms_sum"}
CAPACITY_POLL_S = 1.0  # how often a throughput level reads the engine's capacity


def engine_means(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """The engine's steps and admissions between two readings of its gauges: per step the
    mean period (launch to landed, admissions and freed rows aside), device ms, hand-over
    ms, ms freeing rows between steps and batch; per admission its ms, of them the prompts'
    ms, and newcomers (NaN without one); per newcomer the share of prompts built while a step
    ran."""
    means = {}
    for count, sums in ENGINE_SUMS.items():
        n = after[count] - before[count]
        means.update({key: (after[name] - before[name]) / n if n else float("nan")
                      for key, name in sums.items()})
    return means


async def _throughput(url: str, concurrency: int, duration: float, length: str) -> dict:
    """Closed loop: `concurrency` clients, each sending its next request when one ends."""
    results: list[dict] = []
    deadline = time.perf_counter() + duration

    async def client(session, i: int) -> None:
        await asyncio.sleep(i / concurrency)  # start times spread over 1 s
        await _client_loop(session, url, length, deadline, results)

    async def load(session) -> None:
        await asyncio.gather(*[client(session, i) for i in range(concurrency)])

    return {"concurrency": concurrency, **await _measured(url, duration, load, results)}


async def _open_loop(url: str, rate: float, duration: float, seed: int) -> dict:
    """Open loop: Poisson arrivals at `rate` requests/s for `duration` s, each request's text
    drawn from REPLY_MIX, whatever the server's state (requests pile up when it falls behind)."""
    rng = random.Random(seed)
    lengths, weights = zip(*REPLY_MIX.items(), strict=True)
    results: list[dict] = []

    async def load(session) -> None:
        async def request(length: str) -> None:
            results.append(await _one_request(session, url, _tts_body(length), LENGTHS[length]))

        tasks = []
        t0 = time.perf_counter()
        at = rng.expovariate(rate)
        while at < duration:
            await asyncio.sleep(max(0.0, t0 + at - time.perf_counter()))
            length = rng.choices(lengths, weights)[0]
            tasks.append(asyncio.ensure_future(request(length)))
            at += rng.expovariate(rate)
        await asyncio.gather(*tasks)

    return {"rate": rate, **await _measured(url, duration, load, results)}


async def _measured(url: str, duration: float, load, results: list[dict]) -> dict:
    """Run `load(session)` and summarise the requests it recorded in `results`."""
    import aiohttp

    timeout = aiohttp.ClientTimeout(total=duration + 300)
    async with aiohttp.ClientSession(timeout=timeout,
                                     connector=aiohttp.TCPConnector(limit=0)) as session:
        before = await _engine_gauges(session, url)
        t0 = time.perf_counter()
        running = asyncio.ensure_future(load(session))
        capacities = [before["tts_engine_capacity_streams"]]
        while not running.done():
            await asyncio.wait([running], timeout=CAPACITY_POLL_S)
            capacities.append((await _engine_gauges(session, url))["tts_engine_capacity_streams"])
        await running
        wall = time.perf_counter() - t0
        after = await _engine_gauges(session, url)
    ok = [r for r in results if "error" not in r]
    ttfb = [r["ttfb_ms"] for r in ok]
    ttfa = [r["server_ttfa_ms"] for r in ok if r["server_ttfa_ms"] is not None]
    wait = [r["queue_wait_ms"] for r in ok if r["queue_wait_ms"] is not None]
    rtf = [r["wall_s"] / r["audio_s"] for r in ok if r["audio_s"]]
    late = [r["first_underrun_at_s"] for r in ok]  # None for a stream that never ran late
    return {"requests": len(ok), "rejected": len(results) - len(ok),
            "audio_s_per_s": sum(r["audio_s"] for r in ok) / wall, "ttfb_ms_p50": pct(ttfb, 50),
            "ttfb_ms_p95": pct(ttfb, 95), "ttfb_ms_p99": pct(ttfb, 99),
            "server_ttfa_ms_p50": pct(ttfa, 50), "server_ttfa_ms_p95": pct(ttfa, 95),
            "server_ttfa_ms_p99": pct(ttfa, 99),
            "queue_wait_ms_p95": pct(wait, 95), "rtf_p50": pct(rtf, 50), "rtf_p95": pct(rtf, 95),
            "underruns": sum(r["underruns"] for r in ok),
            "streams_with_underruns": sum(1 for r in ok if r["underruns"]),
            "server_underruns": sum(r["server_underruns"] for r in ok),
            "first_underrun_at_s_p50": pct(late, 50),
            "first_underrun_at_s_max": pct(late, 100),
            **engine_means(before, after),
            "capacity_min": min(capacities), "capacity_end": after["tts_engine_capacity_streams"],
            **{key: after[name] - before[name] for key, name in LEVEL_COUNTS.items()},
            "gpu_memory_peak_mib": after["tts_engine_gpu_memory_peak_mib"]}


def _tts_body(length: str) -> dict:
    return {"text": TEXTS[length], "speaker": "serena", "language": "english"}


def cmd_throughput(args: argparse.Namespace) -> list[dict]:
    rows = []
    if args.rate:
        for rate in args.rate:
            progress(f"throughput: Poisson arrivals at {rate}/s for {args.duration} s "
                     f"against {args.url}")
            rows.append(asyncio.run(_open_loop(args.url, rate, args.duration, args.seed)))
            progress(str(rows[-1]))
        mix = ", ".join(f"{k} {v:.0%}" for k, v in REPLY_MIX.items())
        print_table(f"open loop against {args.url} (texts: {mix}; "
                    f"client TTFB = request sent -> first byte)", rows)
        return rows
    for c in args.concurrency:
        progress(f"throughput: concurrency {c} for {args.duration} s against {args.url}")
        rows.append(asyncio.run(_throughput(args.url, c, args.duration, args.length)))
        progress(str(rows[-1]))
    print_table(f"throughput against {args.url} ({args.length} text; "
                f"client TTFB = request sent -> first byte)", rows)
    return rows


# -- cancel ----------------------------------------------------------------------


CANCEL_POINTS = ("queued", "admitted", "packets")  # where a random-point round cancels
MAX_PACKETS_BEFORE_CANCEL = 8


async def cancel_rounds(engine, rounds: int, concurrency: int, rng: random.Random | None = None,
                        on_round=None) -> dict[str, list[float] | dict[str, int]]:
    """`concurrency` clients, `rounds` in all: open a long stream, cancel it, wait until
    the engine has let it go (its row free). Without `rng` every round cancels after the
    first packet (the steady-state benchmark); with one, each round cancels at a random
    point: still queued, just admitted, or after 1..MAX_PACKETS_BEFORE_CANCEL packets.
    Returns cancel() -> freed latencies (ms) and the rounds per cancel point."""
    latencies: list[float] = []
    points = dict.fromkeys(CANCEL_POINTS, 0)

    async def one_round() -> None:
        point = rng.choice(CANCEL_POINTS) if rng else "packets"
        handle = engine.open_stream(fixed_request(engine, "long"))
        if point == "admitted":
            await handle.admitted()
        elif point == "packets":
            wanted, got = (rng.randint(1, MAX_PACKETS_BEFORE_CANCEL) if rng else 1), 0
            async for _ in handle:
                got += 1
                if got == wanted:
                    break
        t0 = time.perf_counter()
        handle.cancel()
        await handle.closed()
        latencies.append((time.perf_counter() - t0) * 1000)
        points[point] += 1
        if on_round is not None:
            on_round(len(latencies), latencies[-1])

    async def client(n: int) -> None:
        for _ in range(n):
            await one_round()

    share = [rounds // concurrency + (i < rounds % concurrency) for i in range(concurrency)]
    await asyncio.gather(*[client(k) for k in share])
    return {"latencies_ms": latencies, "points": points}


def cmd_cancel(args: argparse.Namespace) -> list[dict]:
    """Cancel after the first packet, `rounds` at `concurrency`: cancel latency, leaked
    sessions, GPU memory growth."""
    engine = make_engine(args, max_batch=args.concurrency, **UNGATED)
    cuda = torch.cuda.is_available()

    def report(n: int, ms: float) -> None:
        if n % 200 == 0:
            progress(f"cancel round {n}: {ms:.2f} ms")

    # warm-up of the same path
    asyncio.run(cancel_rounds(engine, 2 * args.concurrency, args.concurrency))
    sync()
    mem_before = torch.cuda.memory_allocated() if cuda else 0
    latencies = asyncio.run(cancel_rounds(engine, args.rounds, args.concurrency,
                                          on_round=report))["latencies_ms"]
    sync()
    mem_after = torch.cuda.memory_allocated() if cuda else 0
    rows = [{"rounds": len(latencies), "concurrency": args.concurrency,
             "cancel_ms_p50": pct(latencies, 50), "cancel_ms_p95": pct(latencies, 95),
             "cancel_ms_max": max(latencies), "leaked_sessions": engine.active_sessions,
             "gpu_mem_delta_mib": (mem_after - mem_before) / 2**20}]
    engine.close()
    print_table("cancel stress (cancel() -> row freed)", rows)
    return rows


# -- divergence ------------------------------------------------------------------


def cmd_divergence(args: argparse.Namespace) -> list[dict]:
    """Default mode: how often, and after how many frames, a greedy stream's codes differ
    from its solo run when it starts together with concurrency-1 others (bf16 batched
    matmuls need not equal batch-1 ones). TTS_BATCH_INVARIANT=1 should report none."""
    engine = make_engine(args, max_batch=max(args.concurrency), **UNGATED)

    async def codes_of(requests) -> list[np.ndarray]:
        handles = [engine.open_stream(r) for r in requests]

        async def drain(handle) -> np.ndarray:
            async for _ in handle:
                pass
            await handle.closed()
            return np.stack(handle.session.codes)

        return await asyncio.gather(*[drain(h) for h in handles])

    lengths, speakers = list(TEXTS), engine.speakers
    rows = []
    for c in args.concurrency:
        requests = [fixed_request(engine, lengths[i % len(lengths)], args.frames,
                                  speakers[i % len(speakers)])
                    for i in range(c)]
        solo = [asyncio.run(codes_of([r]))[0] for r in requests]
        together = asyncio.run(codes_of(requests))
        first = []
        for a, b in zip(solo, together, strict=True):
            differs = np.flatnonzero((a != b).any(axis=1))
            if differs.size:
                first.append(int(differs[0]))
        rows.append({"concurrency": c, "frames": args.frames, "streams_diverged": len(first),
                     "share_diverged": len(first) / c,
                     "first_diverging_frame_min": min(first, default=None),
                     "first_diverging_frame_p50": float(np.median(first)) if first else None,
                     "invariant_mode": bool(engine.config.batch_invariant)})
        progress(str(rows[-1]))
    engine.close()
    print_table("divergence from solo runs (greedy codes, default mode unless "
                "TTS_BATCH_INVARIANT=1)", rows)
    return rows


# -- invariance ------------------------------------------------------------------

PROOF_TEXTS = [
    "Hello, how can I help you today?",
    "Sure.",
    "The weather tomorrow looks bright, with a light breeze from the west in the afternoon.",
    "Let me check that for you; it will only take a moment.",
    TEXTS["medium"],
    "Numbers like 42 and 1,024 are read out in full.",
    "Thank you for waiting. Your order has shipped and should arrive on Thursday.",
    "One moment, please.",
]


LONG_EVERY = 16  # every 16th request of the invariance proof runs long


def proof_request(engine, i: int, frames: int, long_frames: int):
    """Request i of the invariance proof: its own text and speaker, greedy (even i) or sampled
    with its own seed (odd i), a fixed length (EOS masked); every LONG_EVERY-th runs
    long_frames with the longest text, so that its rows pass the talker's first span (256
    positions) while the others stay short."""
    speakers = engine.speakers
    long = i % LONG_EVERY == LONG_EVERY - 1
    text = TEXTS["long"] if long else PROOF_TEXTS[i % len(PROOF_TEXTS)]
    req = engine.make_request(text, speakers[(i * 3) % len(speakers)], "english",
                              sample=bool(i % 2), seed=1000 + i)
    params = dataclasses.replace(req.params, min_new_tokens=10**9)
    return dataclasses.replace(req, params=params, max_frames=long_frames if long else frames)


async def _pcm_together(engine, requests) -> list[np.ndarray]:
    """The requests' streams opened at once (admitted in groups as rows and the gate allow)."""
    return [pcm for pcm, _ in await asyncio.gather(*[engine.synthesize_pcm(r) for r in requests])]


def _mixes(rng: random.Random, count: int, size: int) -> list[list[int]]:
    """Random mixes of `size` of `count` requests: a shuffled partition when size <= count
    (every request once), else one batch drawn with repeats."""
    if size > count:
        return [rng.choices(range(count), k=size)]
    order = rng.sample(range(count), count)
    return [order[i : i + size] for i in range(0, count - count % size, size)]


def _compare(check: str, solo: list[np.ndarray], mixes: list[list[int]],
             outputs: list[list[np.ndarray]]) -> dict:
    """Each stream of each mix (request indices; odd ones sampled) against its request's
    solo PCM."""
    identical, differing, first_sample = 0, set(), []
    for mix, pcms in zip(mixes, outputs, strict=True):
        for i, pcm in zip(mix, pcms, strict=True):
            if np.array_equal(pcm, solo[i]):
                identical += 1
                continue
            differing.add(i)
            diff = np.flatnonzero(pcm[: len(solo[i])] != solo[i][: len(pcm)])
            first_sample.append(int(diff[0]) if diff.size else min(len(pcm), len(solo[i])))
    return {"check": check, "batches": len(mixes), "streams": sum(len(m) for m in mixes),
            "requests": len({i for m in mixes for i in m}),
            "sampled_streams": sum(i % 2 for m in mixes for i in m),
            "identical_streams": identical, "requests_differing": sorted(differing),
            "first_differing_sample_min": min(first_sample, default=None)}


def cmd_invariance(args: argparse.Namespace) -> tuple[list[dict], dict]:
    """TTS_BATCH_INVARIANT=1: every request's PCM solo, then in random mixes of each batch size
    and once more without CUDA graphs, compared bit for bit with its solo PCM."""
    rng = random.Random(args.seed)
    rows: list[dict] = []

    def record(row: dict) -> None:
        rows.append(row)
        progress(str(row))
        write_result(args.out, "invariance", rows, {"passed": None})  # partial results as they come

    engine = make_engine(args, batch_invariant=1, max_batch=max(args.batches), **UNGATED)
    requests = [proof_request(engine, i, args.frames, args.long_frames)
                for i in range(args.requests)]
    solo = [asyncio.run(_pcm_together(engine, [r]))[0] for r in requests]
    progress(f"invariance: {len(solo)} solo runs, graphs {engine.stepper.graphed}")
    for size in args.batches:
        mixes = _mixes(rng, len(requests), size)
        outputs = [asyncio.run(_pcm_together(engine, [requests[i] for i in mix])) for mix in mixes]
        record({**_compare(f"batch {size} vs solo", solo, mixes, outputs),
                "graphs": engine.stepper.graphed})
    engine.close()
    engine = make_engine(args, batch_invariant=1, max_batch=args.eager_batch, cuda_graphs=False,
                         **UNGATED)
    # eager steps are slow
    short = [i for i, r in enumerate(requests) if r.max_frames == args.frames]
    mix = [rng.choice(short) for _ in range(args.eager_batch)]
    outputs = [asyncio.run(_pcm_together(engine, [requests[i] for i in mix]))]
    record({**_compare(f"eager batch {args.eager_batch} vs graph solo", solo, [mix], outputs),
            "graphs": engine.stepper.graphed})
    engine.close()
    passed = all(not r["requests_differing"] for r in rows)
    print_table(f"batch-invariant mode: PCM of {args.requests} requests ({args.frames} frames, "
                f"every {LONG_EVERY}th {args.long_frames}; odd ones sampled) in batches against "
                f"their solo runs", rows)
    print("invariance: "
          f"{'PASSED: every stream bit-identical to its solo run' if passed else 'FAILED'}")
    return rows, {"passed": passed}


# -- launches --------------------------------------------------------------------


def cmd_launches(args: argparse.Namespace) -> list[dict]:
    from torch.profiler import ProfilerActivity, profile

    if not torch.cuda.is_available():
        raise SystemExit("bench launches needs CUDA")
    rows = []
    for name, graphs in (("graph", True), ("eager", False)):
        engine = make_engine(args, cuda_graphs=graphs)
        for _ in range(5):
            engine.stepper.step(1, [256], mixed=False)
        sync()
        n = 10
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for _ in range(n):
                engine.stepper.step(1, [256], mixed=False)
            sync()
        events = prof.key_averages()
        launches = sum(e.count for e in events
                       if e.key in ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC"))
        graph_launches = sum(e.count for e in events if e.key == "cudaGraphLaunch")
        kernels = sum(e.count for e in events if e.device_type == torch.autograd.DeviceType.CUDA)
        rows.append({"variant": name, "host_kernel_launches_per_frame": launches / n,
                     "graph_launches_per_frame": graph_launches / n,
                     "gpu_kernels_per_frame": kernels / n})
        engine.close()
    print_table("kernel launches per frame (batch 1, talker + predictor + decoder)", rows)
    return rows


# -- profile ---------------------------------------------------------------------

# Kernel families, by the first pattern a kernel's name matches (case-insensitive).
KERNEL_FAMILIES = (
    ("attention", r"flash|fmha|attention|sdpa"),
    ("gemm", r"gemm|nvjet|xmma|cutlass|cublas|splitk|gemv"),
    ("inductor fused", r"^triton_"),
    ("scatter / gather / index", r"scatter|gather|index"),
    ("copy / cat", r"copy|memcpy|memset|catarray|cat_"),
    ("eager elementwise / reduce", r"elementwise|reduce|vectorized"),
)


def kernel_family(name: str) -> str:
    return next((family for family, pattern in KERNEL_FAMILIES
                 if re.search(pattern, name, re.IGNORECASE)), "other")


def cmd_profile(args: argparse.Namespace) -> tuple[list[dict], dict]:
    """Where a graph-replayed frame's device time goes: kernels per frame and their time, by
    family and the largest one by one, per batch size (the engine as configured: compiled
    layers on CUDA by default)."""
    from torch.profiler import ProfilerActivity, profile

    if not torch.cuda.is_available():
        raise SystemExit("bench profile needs CUDA")
    engine = make_engine(args, max_batch=max(args.batches))
    families, top = [], []
    for batch in args.batches:
        positions = [args.position] * batch
        for _ in range(5):
            engine.stepper.step(batch, positions, mixed=False)
        sync()
        start = time.perf_counter()
        for _ in range(args.frames):
            engine.stepper.step(batch, positions, mixed=False)
        sync()
        wall_ms = 1000 * (time.perf_counter() - start) / args.frames
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(args.frames):
                engine.stepper.step(batch, positions, mixed=False)
            sync()
        kernels = [e for e in prof.key_averages()
                   if e.device_type == torch.autograd.DeviceType.CUDA and e.count]
        busy_us = sum(e.self_device_time_total for e in kernels) / args.frames
        by_family: dict[str, list[float]] = {}
        for e in kernels:
            count_time = by_family.setdefault(kernel_family(e.key), [0, 0.0])
            count_time[0] += e.count / args.frames
            count_time[1] += e.self_device_time_total / args.frames
        for family, (count, us) in sorted(by_family.items(), key=lambda kv: -kv[1][1]):
            families.append({"batch": batch, "family": family, "kernels_per_frame": count,
                             "us_per_frame": us, "share_pct": 100 * us / busy_us,
                             "wall_ms_per_frame": wall_ms})
        families.append({"batch": batch, "family": "all (device busy)",
                         "kernels_per_frame": sum(c for c, _ in by_family.values()),
                         "us_per_frame": busy_us, "share_pct": 100.0,
                         "wall_ms_per_frame": wall_ms})
        for e in sorted(kernels, key=lambda e: -e.self_device_time_total)[: args.top]:
            top.append({"batch": batch, "kernel": e.key[:70], "family": kernel_family(e.key),
                        "calls_per_frame": e.count / args.frames,
                        "us_per_frame": e.self_device_time_total / args.frames,
                        "share_pct": 100 * e.self_device_time_total / args.frames / busy_us})
    engine.close()
    print_table(f"largest kernels of a frame (talker position {args.position})", top)
    print_table("a frame's device time by kernel family (graph replays; wall: step incl. "
                "its host part)", families)
    return families, {"top_kernels": top}


COMMANDS = {
    "prepare": cmd_prepare, "step": cmd_step, "decoder": cmd_decoder, "e2e": cmd_e2e,
    "throughput": cmd_throughput, "cancel": cmd_cancel, "divergence": cmd_divergence,
    "launches": cmd_launches, "metrics": cmd_metrics, "memory": cmd_memory,
    "invariance": cmd_invariance, "profile": cmd_profile,
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
    q = bsub.add_parser("step")
    common(q)
    q.add_argument("--batch", type=int, nargs="+", default=[1, 4, 16, 64, 128, 256])
    q.add_argument("--variants", nargs="+", default=["graph", "eager"], choices=["graph", "eager"])
    q.add_argument("--decoder-dtypes", nargs="+", default=[EngineConfig.decoder_dtype],
                   choices=list(DECODER_DTYPES))
    q = bsub.add_parser("decoder")
    common(q)
    q.add_argument("--frames", type=int, default=200)
    q.add_argument("--dtypes", nargs="+", default=list(DECODER_DTYPES),
                   choices=list(DECODER_DTYPES))
    q.add_argument("--batch", type=int, nargs="+", default=[1, 16, 64, 256],
                   help="batched frame steps")
    q = bsub.add_parser("e2e")
    common(q)
    q.add_argument("--compile", action="store_true",
                   help="TTS_COMPILE=1: torch.compile of the decoder layers "
                        "(the compile cache in the cache root)")
    q.add_argument("--lengths", nargs="+", default=list(LENGTHS), choices=list(LENGTHS))
    q = bsub.add_parser("metrics")
    common(q)
    q.add_argument("--concurrency", type=int, nargs="+", default=[1, 64],
                   help="streams at once per round")
    q.add_argument("--length", default="medium", choices=list(LENGTHS))
    q = bsub.add_parser("memory")
    common(q)
    q.add_argument("--max-batch", type=int, nargs="+", default=[16, 64, 128, 256],
                   help="TTS_MAX_BATCH of each engine (1..256)")
    q = bsub.add_parser("throughput")
    common(q, model=False)
    q.add_argument("--url", default="http://127.0.0.1:9000")
    q.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16, 64, 128, 256])
    q.add_argument("--duration", type=float, default=30.0)
    q.add_argument("--length", default="medium", choices=list(LENGTHS))
    q.add_argument("--rate", type=float, nargs="+", default=None,
                   help="open loop instead: Poisson arrivals at each rate (requests/s), "
                        "texts from REPLY_MIX")
    q.add_argument("--seed", type=int, default=0, help="the open loop's arrival and length draws")
    q = bsub.add_parser("cancel")
    common(q)
    q.add_argument("--rounds", type=int, default=1000)
    q.add_argument("--concurrency", type=int, default=16)
    q = bsub.add_parser("divergence")
    common(q)
    q.add_argument("--concurrency", type=int, nargs="+", default=[16, 64])
    q.add_argument("--frames", type=int, default=60)
    q = bsub.add_parser("invariance")
    common(q)
    q.add_argument("--requests", type=int, default=32)
    q.add_argument("--batches", type=int, nargs="+", default=[2, 16, 64, 256],
                   help="streams per batch (1..256)")
    q.add_argument("--frames", type=int, default=32, help="frames per request")
    q.add_argument("--long-frames", type=int, default=200,
                   help=f"frames of every {LONG_EVERY}th request (past 256 positions)")
    q.add_argument("--eager-batch", type=int, default=16,
                   help="streams of the run without CUDA graphs")
    q.add_argument("--seed", type=int, default=0, help="the random mixes")
    q = bsub.add_parser("launches")
    common(q)
    q = bsub.add_parser("profile")
    common(q)
    q.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    q.add_argument("--position", type=int, default=256, help="every row's talker position")
    q.add_argument("--frames", type=int, default=20, help="frames timed and profiled")
    q.add_argument("--top", type=int, default=15, help="kernels listed one by one per batch")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    result = COMMANDS[args.bench](args)
    # a command may add top-level keys
    rows, extra = result if isinstance(result, tuple) else (result, {})
    write_result(args.out, args.bench, rows,
                 {"args": {k: v for k, v in vars(args).items() if k != "func"}, **extra})
    # a check that failed (invariance) fails the command
    return 0 if extra.get("passed", True) else 1
