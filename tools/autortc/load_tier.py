"""AutoRTC load tier: K conversations at once across LiveKit nodes and agent workers.

    python -m tools.autortc.load_tier --out DIR [--ks 1 2 4] [--nodes 2] [--workers 2]
        [--per-k 4] [--profile ci] [--cases tools/autortc/cases/mini_cases.json]

Starts the stack (tools/autortc/stack.py): `--nodes` LiveKit nodes sharing a Redis,
the dev Omni backend and `--workers` agent workers, worker i registered with node
i mod nodes. For each K, ascending, K conversations are in flight at once until
`--per-k` of them ran; each is an AutoRTC case (the first `--per-k` cases of the
file, the same for every K) in a fresh room made through the nodes in turn, run as
the suite runs it (user and probe bots, `run_suite.run_attempt`, no retry). Per K:
the turn latency (EoT -> first audio heard by the probe) P50/P95/max, the
failures (capture status not OK), the rooms each worker served (the agent's
`streamtalk.worker`, seen by the probe) and the AutoRTC gates of the profile
(gates.evaluate, no baseline). It stops at the first K whose gates fail, unless
`--keep-going` (to draw the whole curve; the exit code still says whether all passed).

Writes `<out>/load.json` (per K, and every conversation's metrics row),
`<out>/load.png` (P95 and P50 against concurrent rooms, with the gate) and prints
a table; the case folders are under `<out>/k<K>/`. Exit 0 when every K ran passed.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from streamtalk_common.paths import output_root
from streamtalk_common.stats import percentile
from streamtalk_common.tables import print_table, write_json

from . import audio_metrics, gates
from .common import read_json
from .make_cases import load_cases, make_case
from .plots import load_png
from .run_suite import run_attempt
from .stack import Stack, start_stack

GATED_LATENCY = "eot_to_first_audio_p95_ms"


def converse(stack: Stack, url: str, case: dict[str, Any], wav_dir: Path, out: Path,
             args: argparse.Namespace) -> dict[str, Any]:
    """One conversation in a room made through node `url`: its AutoRTC metrics row."""
    wavs = make_case(case, wav_dir)
    run_id = "load" + uuid.uuid4().hex[:8]
    cdir, info = run_attempt(dataclasses.replace(stack, livekit_url=url), case, wavs, run_id, 1, 1,
                             out, args)
    row = audio_metrics.case_metrics(cdir, case, wavs["wav"])
    probe = cdir / "probe_result.json"
    row.update({"room": info["room"], "node": url, "retries": 0,
                "worker": read_json(probe).get("agent_worker", "") if probe.exists() else ""})
    return row


def run_k(stack: Stack, k: int, cases: list[dict[str, Any]], wav_dir: Path, out: Path,
          args: argparse.Namespace) -> list[dict[str, Any]]:
    """`len(cases)` conversations, K of them in flight at once."""
    todo = iter(enumerate(cases))
    nodes = itertools.cycle(stack.livekit_urls)
    rows: list[dict[str, Any]] = []
    lock = threading.Lock()

    def loop() -> None:
        while True:
            with lock:
                item = next(todo, None)
                url = next(nodes)
            if item is None:
                return
            row = converse(stack, url, item[1], wav_dir, out, args)
            with lock:
                rows.append(row)

    threads = [threading.Thread(target=loop, name=f"load-{k}-{i}") for i in range(k)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return rows


def summary(k: int, rows: list[dict[str, Any]], profile: dict[str, Any],
            wall_s: float) -> dict[str, Any]:
    latencies = [r["eot_to_first_audio_ms"] for r in rows
                 if r.get("eot_to_first_audio_ms") is not None]
    result = gates.evaluate(rows, profile, None)
    return {
        "k": k, "conversations": len(rows), "wall_s": round(wall_s, 1),
        "failures": sum(r["capture_status"] != "OK" for r in rows),
        "eot_to_first_audio_p50_ms": percentile(latencies, 50),
        "eot_to_first_audio_p95_ms": percentile(latencies, 95),
        "eot_to_first_audio_max_ms": max(latencies, default=None),
        "rooms_per_worker": dict(sorted(Counter(r["worker"] or "?" for r in rows).items())),
        "rooms_per_node": dict(sorted(Counter(r["node"] for r in rows).items())),
        "verdict": result["verdict"], "fail_reasons": result.get("fail_reasons", []),
    }


def run(args: argparse.Namespace) -> int:
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    profile = gates.load_profile(args.profile)
    cases = list(itertools.islice(itertools.cycle(load_cases(args.cases)), args.per_k))
    t0 = time.monotonic()
    print(f"[load] starting {args.nodes} LiveKit node(s) and {args.workers} worker(s) "
          f"(logs in {out / 'logs'})", flush=True)
    stack = start_stack(out / "logs", (out / "agent-output").resolve(), nodes=args.nodes,
                        workers=args.workers)
    per_k: list[dict[str, Any]] = []
    rows_by_k: dict[str, list[dict[str, Any]]] = {}
    try:
        for k in sorted(set(args.ks)):
            print(f"[load] K={k}: {len(cases)} conversations, {k} at once", flush=True)
            started = time.monotonic()
            rows = run_k(stack, k, cases, output_root() / "autortc" / "wavs", out / f"k{k}", args)
            per_k.append(summary(k, rows, profile, time.monotonic() - started))
            rows_by_k[str(k)] = rows
            if per_k[-1]["verdict"] != "PASS":
                print(f"[load] K={k} failed its gates: {'; '.join(per_k[-1]['fail_reasons'])}"
                      + ("" if args.keep_going else "; stopping"), flush=True)
                if not args.keep_going:
                    break
    finally:
        stack.stop()
    limit = profile["thresholds"][GATED_LATENCY]
    table = [{"K": s["k"], "conversations": s["conversations"], "failures": s["failures"],
              "P50 ms": s["eot_to_first_audio_p50_ms"], "P95 ms": s["eot_to_first_audio_p95_ms"],
              "max ms": s["eot_to_first_audio_max_ms"],
              "rooms per worker": " ".join(f"{w}:{n}" for w, n in s["rooms_per_worker"].items()),
              "gates": s["verdict"]} for s in per_k]
    print_table(f"load tier: {args.nodes} node(s), {args.workers} worker(s), "
                f"profile {args.profile} (gate P95 {limit} ms)", table)
    png = load_png(out / "load.png", per_k, limit) if per_k else None
    write_json(out / "load.json", {"nodes": args.nodes, "workers": args.workers,
                                   "profile": args.profile, "gate_p95_ms": limit, "per_k": per_k,
                                   "rows": rows_by_k, "wall_s": round(time.monotonic() - t0, 1)})
    print(f"[load] {out / 'load.json'}" + (f", {png}" if png else ""), flush=True)
    return 0 if per_k and all(s["verdict"] == "PASS" for s in per_k) else 1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=output_root() / "autortc" / "load")
    p.add_argument("--ks", type=int, nargs="+", default=[1, 2, 4],
                   help="concurrent conversations to try")
    p.add_argument("--nodes", type=int, default=2, help="LiveKit nodes (2 and more share a Redis)")
    p.add_argument("--workers", type=int, default=2, help="agent workers")
    p.add_argument("--per-k", type=int, default=4, help="conversations per K")
    p.add_argument("--cases", type=Path,
                   default=Path(__file__).parent / "cases" / "mini_cases.json")
    p.add_argument("--profile", default="ci", help="gate profile in profiles.json (gpu|ci)")
    p.add_argument("--pad-s", type=float, default=20.0, help="recording pad per conversation")
    p.add_argument("--ready-timeout-s", type=float, default=30.0)
    p.add_argument("--keep-going", action="store_true", help="run every K, even past a failing one")
    args = p.parse_args(argv)
    for name in ("nodes", "workers", "per_k"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be 1 or more")
    if min(args.ks) < 1:
        p.error("--ks must all be 1 or more")
    return args


def main(argv: list[str] | None = None) -> int:
    return run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
