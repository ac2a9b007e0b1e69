"""`python -m tools.soak cancel|long-reply|soak|all [bounds] [--out FILE.json]`.

Every run is bounded (`--rounds`, `--chars`, `--duration`); the result JSON goes to
`--out` (default `${STREAMTALK_OUTPUT:-output}/soak/<command>.json`) with the
environment and one verdict per part, and a table is printed last. Exit status 1
when a verdict fails, 2 on a bad argument.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path
from typing import Any

from streamtalk_common.paths import cache_root, output_root
from tools.autortc.common import write_json

from . import __doc__ as PACKAGE_DOC

MIN_SOAK_S = 30.0
MIN_SAMPLE_S = 0.5


def progress(msg: str) -> None:
    print(f"[soak] {msg}", file=sys.stderr, flush=True)


def positive(kind: type, least: float):  # noqa: ANN201
    def parse(raw: str):  # noqa: ANN202
        try:
            value = kind(raw)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{raw!r} is not {'an integer' if kind is int else 'a number'}") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"{value} is below the least allowed, {least:g}")
        return value
    return parse


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tools.soak", description=PACKAGE_DOC,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    parts = {"cancel": ("cancel",), "long-reply": ("long-reply",), "soak": ("soak",),
             "all": ("cancel", "long-reply", "soak")}
    for command, needs in parts.items():
        q = sub.add_parser(command)
        q.add_argument("--out", type=Path, default=None, help="result JSON path")
        if "cancel" in needs:
            q.add_argument("--rounds", type=positive(int, 1), default=1000)
            q.add_argument("--concurrency", type=positive(int, 1), default=8,
                           help="streams at once")
            q.add_argument("--seed", type=int, default=0, help="the cancel points' draws")
            q.add_argument("--model-dir", type=Path, default=None,
                           help="default: the tiny checkpoint")
        if "long-reply" in needs:
            q.add_argument("--chars", type=positive(int, 1), default=10_000,
                           help="length of the scripted reply")
        if "soak" in needs:
            q.add_argument("--duration", type=positive(float, MIN_SOAK_S), default=1800.0,
                           help="seconds of conversations")
            q.add_argument("--conversations", type=positive(int, 1), default=2, help="at once")
            q.add_argument("--warm-up", type=positive(float, 0.0), default=600.0,
                           help="seconds of the same load before the soak (at least two "
                                "rounds): a fresh worker's memory pools fill in its first "
                                "minutes")
            q.add_argument("--sample-every", type=positive(float, MIN_SAMPLE_S), default=5.0,
                           help="seconds")
            q.add_argument("--rss-slope-max", type=positive(float, 0.0), default=1.0,
                           help="MiB/min per service")
        q.set_defaults(parts=needs)
    return p.parse_args(argv)


def rows_of(results: dict[str, Any]) -> list[tuple[str, str, str]]:
    rows = []
    if "cancel" in results:
        c = results["cancel"]
        rows.append(("cancel", "PASS" if c["ok"] else "FAIL",
                     f"{c['rounds']} rounds at {c['concurrency']}: "
                     f"leaked sessions {c['leaked_sessions']}, "
                     f"rows in use {c['rows_in_use_after']}, "
                     f"threads {c['threads_before']} -> {c['threads_after']}, "
                     f"cancel->freed P50 {c['cancel_to_freed_ms_p50']} ms "
                     f"P95 {c['cancel_to_freed_ms_p95']} ms"))
    if "long_reply" in results:
        r = results["long_reply"]
        rows.append(("long-reply", "PASS" if r["ok"] else "FAIL",
                     f"{r['reply_chars']} chars in {r['segments']} segments; audio produced "
                     f"{r['audio_produced_s']} s, received {r['audio_received_s']} s; "
                     f"reply_end {r['reply_end']}"))
    if "soak" in results:
        s = results["soak"]
        rows.append(("soak", "PASS" if s["ok"] else "FAIL",
                     f"{s['conversations']} conversations ({s['at_once']} at once) "
                     f"in {s['duration_s']} s after {s['warm_up_conversations']} of warm-up, "
                     f"{len(s['failed_conversations'])} failed"))
        for name, v in s["services"].items():
            if v.get("exited"):
                rows.append((f"  {name}", "FAIL", "exited during the soak"))
                continue
            lives = v["lifetimes"]
            restarted = (f"; {len(lives)} process lifetimes, RSS "
                         + ", ".join(f"{r['rss_mib_start']} -> {r['rss_mib_end']}" for r in lives)
                         + " MiB, steepest lifetime slope") if len(lives) > 1 else ", slope"
            gaps = [r["registered_after_s"] for r in v.get("restarts", [])]
            rows.append((f"  {name}", "PASS" if v["ok"] else "FAIL",
                         f"RSS {v['rss_mib_start']} -> {v['rss_mib_end']} MiB (peak "
                         f"{v['rss_mib_peak']}){restarted} "
                         f"{v['rss_slope_mib_per_min']} MiB/min; "
                         + (f"{len(gaps)} restarts, exit -> next registered {gaps} s; "
                            if gaps else "")
                         + f"fds {v['fds_idle_before']} -> "
                         f"{v['fds_idle_after']} (max {v['fds_max']}); "
                         f"threads {v['threads_idle_before']} -> {v['threads_idle_after']} "
                         f"(max {v['threads_max']})"))
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM unwinds like an error, so the services started below are stopped too
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    out_path = args.out or output_root() / "soak" / f"{args.command}.json"
    work = out_path.with_suffix("")  # conversations, logs and bot recordings
    started = time.monotonic()
    results: dict[str, Any] = {}
    if "cancel" in args.parts:
        from tts_engine.checkpoint import ensure_checkpoint

        from .cancel import run_cancel

        model_dir = args.model_dir or ensure_checkpoint(cache_root() / "checkpoints" / "tiny-test",
                                                        "tiny", seed=0)
        results["cancel"] = run_cancel(model_dir, args.rounds, args.concurrency, args.seed,
                                       progress)
    if {"long-reply", "soak"} & set(args.parts):
        from .conversations import run_long_reply, run_soak, start_soak_stack

        stack, token_url = start_soak_stack(work, getattr(args, "chars", 1), progress)
        try:
            if "long-reply" in args.parts:
                results["long_reply"] = run_long_reply(stack, token_url, args.chars,
                                                       work / "long-reply", progress)
            if "soak" in args.parts:
                results["soak"] = run_soak(stack, token_url, args.duration, args.conversations,
                                           args.sample_every, args.rss_slope_max, work / "soak",
                                           progress, warm_up_s=args.warm_up)
        finally:
            stack.stop()
    ok = all(r["ok"] for r in results.values())
    args_json = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    write_json(out_path, {"command": args.command, "args": args_json,
                          "date": time.strftime("%Y-%m-%d"),
                          "wall_s": round(time.monotonic() - started, 1), "ok": ok, **results})
    progress(f"wrote {out_path}")
    rows = rows_of(results)
    width = max(len(r[0]) for r in rows)
    print(f"\nstress and soak ({args.command}): {'PASS' if ok else 'FAIL'}")
    for name, verdict, detail in rows:
        print(f"{name.ljust(width)}  {verdict}  {detail}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
