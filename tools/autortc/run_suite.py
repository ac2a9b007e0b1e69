"""AutoRTC runner: one room per case, user + probe bots as subprocesses, metrics, gates, report.

    python -m tools.autortc.run_suite --cases tools/autortc/cases/mini_cases.json \
        --out output/autortc/mini [--start-stack | --livekit-url ... --agent-name ...]

Each case gets a fresh room, created through the server API with a RoomAgentDispatch
for the agent and metadata `{"trace_id", "case_id"}`; the bots join it with tokens
minted here. A case whose probe heard silence (max(reply_rms, full_rms) < 0.01) is
retried once in a fresh room with the same dispatch (the trace_id gets the attempt
number, so events and pre_rtc.wav of the first attempt cannot be mistaken for the
second's). Per
case the folder `<out>/cases/<trace_id>/` holds the WAVs, the bots' results,
the agent's pre_rtc.wav and trace, and metrics.json. The whole run is bounded by
`--total-timeout-s`; unfinished cases are reported as NOT_RUN.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

from streamtalk_common.paths import output_root

from . import audio_metrics, gates, report
from .common import SILENCE_RMS, read_json, write_json
from .make_cases import load_cases, make_case
from .stack import Stack, start_stack


def bot_token(stack: Stack, room: str, identity: str) -> str:
    from livekit import api

    grants = api.VideoGrants(room_join=True, room=room, can_publish=True, can_subscribe=True,
                             can_publish_data=True)
    return (api.AccessToken(stack.api_key, stack.api_secret).with_identity(identity)
            .with_name(identity).with_ttl(timedelta(minutes=10)).with_grants(grants).to_jwt())


async def _room_service(stack: Stack, call: str, request: Any) -> Any:
    from livekit import api

    http = stack.livekit_url.replace("ws://", "http://").replace("wss://", "https://")
    lk = api.LiveKitAPI(http, stack.api_key, stack.api_secret)
    try:
        return await asyncio.wait_for(getattr(lk.room, call)(request), 10)
    finally:
        await lk.aclose()


def create_room(stack: Stack, room: str, meta: dict[str, str]) -> None:
    """A fresh room whose creation dispatches the agent with the case's metadata."""
    from livekit import api

    request = api.CreateRoomRequest(name=room, empty_timeout=60, departure_timeout=5, agents=[
        api.RoomAgentDispatch(agent_name=stack.agent_name, metadata=json.dumps(meta))])
    try:
        asyncio.run(_room_service(stack, "create_room", request))
    except Exception as exc:
        raise SystemExit(f"cannot create room {room} on {stack.livekit_url}: {exc!r} "
                         "(is the LiveKit server up and are the API key/secret right?)") from None


def delete_room(stack: Stack, room: str, settle_s: float = 3.0) -> None:
    """Delete a room once its agent has withdrawn its voice track (it does when the last
    person leaves), or after `settle_s`: a room the server ends while the agent still
    publishes strands the agent's track in its process (agent/audio_output.py, withdraw)."""
    from livekit import api

    async def agent_publishing() -> bool:
        found = await _room_service(stack, "list_participants",
                                    api.ListParticipantsRequest(room=room))
        return any(p.kind == api.ParticipantInfo.Kind.AGENT and p.tracks
                   for p in found.participants)

    deadline = time.monotonic() + settle_s
    with contextlib.suppress(Exception):  # the room may already be gone
        while asyncio.run(agent_publishing()) and time.monotonic() < deadline:
            time.sleep(0.1)
    with contextlib.suppress(Exception):
        asyncio.run(_room_service(stack, "delete_room", api.DeleteRoomRequest(room=room)))


def run_bot(argv: list[str], log: Path, timeout_s: float) -> subprocess.Popen[bytes]:
    log.parent.mkdir(parents=True, exist_ok=True)
    fh = open(log, "wb")  # noqa: SIM115 - closed by the caller through proc.stdout
    proc = subprocess.Popen([sys.executable, "-m", *argv], stdout=fh, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    proc._autortc_log = fh  # type: ignore[attr-defined]
    proc._autortc_deadline = time.monotonic() + timeout_s  # type: ignore[attr-defined]
    return proc


def reap(proc: subprocess.Popen[bytes]) -> int:
    """Wait for a bot until its deadline, then kill it (a hung bot never hangs the suite)."""
    left = max(0.1, proc._autortc_deadline - time.monotonic())  # type: ignore[attr-defined]
    try:
        rc = proc.wait(timeout=left)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 9)
        proc.wait(timeout=10)
        rc = -9
    proc._autortc_log.close()  # type: ignore[attr-defined]
    return rc


def run_attempt(stack: Stack, case: dict[str, Any], wavs: dict[str, Path], run_id: str,
                turn: int, attempt: int, out: Path,
                args: argparse.Namespace) -> tuple[Path, dict[str, Any]]:
    case_id = case["id"]
    trace_id = f"{run_id}-{turn:02d}-{case_id}-a{attempt}"
    room = f"autortc-{trace_id}"
    cdir = out / "cases" / trace_id
    cdir.mkdir(parents=True, exist_ok=True)
    meta = {"trace_id": trace_id, "case_id": case_id}
    create_room(stack, room, meta)
    expect = int(case.get("expect_replies", 1))
    bot_timeout = args.ready_timeout_s + args.pad_s + 30
    common = ["--url", stack.livekit_url, "--trace-id", trace_id, "--case-id", case_id,
              "--ready-timeout-s", str(args.ready_timeout_s), "--expect-replies", str(expect),
              "--timeout-s", str(bot_timeout - 5)]
    probe_argv = ["tools.autortc.probe_bot", *common, "--token",
                  bot_token(stack, room, "autortc-probe"), "--out-dir", str(cdir),
                  "--record-s", str(args.pad_s)]
    user_argv = ["tools.autortc.user_bot", *common, "--token",
                 bot_token(stack, room, "autortc-user"), "--wav", str(wavs["wav"]),
                 "--out", str(cdir / "user_result.json"), "--hold-s", str(args.pad_s)]
    if "barge_wav" in wavs:
        user_argv += ["--barge-in-wav", str(wavs["barge_wav"]), "--barge-in-ms",
                      str(case["barge_in"].get("after_reply_start_ms", 800))]
    if "settle_s" in case:  # both bots stay this long after the last reply: no new one may start
        settle = ["--tail-s", str(case["settle_s"])]
        probe_argv += settle
        user_argv += settle
    probe = run_bot(probe_argv, cdir / "probe_bot.log", bot_timeout)
    user = run_bot(user_argv, cdir / "user_bot.log", bot_timeout)
    rc_probe, rc_user = reap(probe), reap(user)
    delete_room(stack, room)
    info = {"trace_id": trace_id, "room": room, "attempt": attempt, "rc_probe": rc_probe,
            "rc_user": rc_user}
    pre = stack.agent_output / "pre_rtc" / trace_id / "pre_rtc.wav"
    deadline = time.monotonic() + 5
    while not pre.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(0.3)  # the agent's final save runs in its `finally`
    if pre.exists():
        shutil.copy(pre, cdir / "pre_rtc.wav")
    trace = stack.agent_output / "traces" / f"{room}.jsonl"
    if trace.exists():
        shutil.copy(trace, cdir / "agent_trace.jsonl")
    write_json(cdir / "attempt.json", info)
    return cdir, info


def warm_up(stack: Stack, case: dict[str, Any], wav_dir: Path, run_id: str, out: Path,
            args: argparse.Namespace) -> None:
    """One conversation that is not measured, on a stack this run started: the first one of
    fresh processes (the dev backend's first recognition, the worker's first room) is slower
    by a varying amount, more so on a freshly installed machine, and is no case's latency."""
    t0 = time.monotonic()
    run_attempt(stack, case, make_case(case, wav_dir), run_id, 0, 1, out, args)
    print(f"[autortc] warm-up conversation ({case['id']}, not measured) in "
          f"{time.monotonic() - t0:.1f} s", flush=True)


def probe_silent(cdir: Path) -> bool:
    try:
        p = read_json(cdir / "probe_result.json")
    except (OSError, ValueError):
        return True
    return max(p.get("reply_rms", 0.0), p.get("full_rms", 0.0)) < SILENCE_RMS


def run_suite(args: argparse.Namespace) -> int:
    t_start = time.monotonic()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    cases = load_cases(args.cases, args.only)
    baseline = gates.load_baseline(args.baseline) if args.baseline else None  # before any work
    if args.turns and args.turns > len(cases):  # nightly: cycle the cases, one room per turn
        cases = [cases[i % len(cases)] for i in range(args.turns)]
    wav_dir = args.wav_cache or (output_root() / "autortc" / "wavs")
    run_id = args.run_id or time.strftime("%m%d%H%M%S") + uuid.uuid4().hex[:4]
    stack: Stack | None = None
    if args.start_stack:
        agent_output = (out / "agent-output").resolve()
        agent_env = dict(kv.split("=", 1) for kv in args.agent_env)
        omni_env = dict(kv.split("=", 1) for kv in args.omni_env)
        print(f"[autortc] starting stack (logs in {out / 'logs'})", flush=True)
        stack = start_stack(out / "logs", agent_output, agent_env, omni_env)
        print(f"[autortc] stack up in {time.monotonic() - t_start:.1f} s", flush=True)
    else:
        stack = Stack(args.livekit_url or os.environ["LIVEKIT_URL"],
                      args.api_key or os.environ["LIVEKIT_API_KEY"],
                      args.api_secret or os.environ["LIVEKIT_API_SECRET"],
                      args.agent_name, Path(args.agent_output or output_root()))
    rows: list[dict[str, Any]] = []
    try:
        if args.start_stack and args.warmup and cases:
            warm_up(stack, cases[0], wav_dir, run_id, out / "warmup", args)
        for i, case in enumerate(cases, 1):
            left = args.total_timeout_s - (time.monotonic() - t_start)
            if left < args.pad_s + args.ready_timeout_s:
                rows.append({"case_id": case["id"], "priority": case.get("priority", "P0"),
                             "capture_status": "NOT_RUN", "retries": 0})
                print(f"[autortc] {i}/{len(cases)} {case['id']}: NOT_RUN (time bound)", flush=True)
                continue
            if i > 1 and args.between_s > 0:
                time.sleep(args.between_s)
            wavs = make_case(case, wav_dir)
            t_case = time.monotonic()
            retries = 0
            for attempt in (1, 2):
                cdir, info = run_attempt(stack, case, wavs, run_id, i, attempt, out, args)
                if attempt == 1 and probe_silent(cdir):
                    retries = 1
                    print(f"[autortc] {case['id']}: probe heard silence, retrying in a fresh room",
                          flush=True)
                    continue
                break
            row = audio_metrics.case_metrics(cdir, case, wavs["wav"])
            row.update({"retries": retries, "trace_id": info["trace_id"], "room": info["room"],
                        "case_dir": str(cdir.relative_to(out))})
            write_json(cdir / "metrics.json", row)
            rows.append(row)
            e2a = row.get("eot_to_first_audio_ms")
            print(f"[autortc] {i}/{len(cases)} {case['id']}: {row['capture_status']} "
                  f"eot->first_audio={e2a if e2a is None else round(e2a, 1)} ms "
                  f"max_gap={row.get('max_gap_ms')} ms retries={retries} "
                  f"({time.monotonic() - t_case:.1f} s)", flush=True)
    finally:
        if args.start_stack and stack is not None:
            stack.stop()
    result = gates.evaluate(rows, gates.load_profile(args.profile), baseline)
    result["run"] = {"run_id": run_id, "cases_file": args.cases.name, "profile": args.profile,
                     "wall_s": round(time.monotonic() - t_start, 1), "tier": args.tier}
    report.write_all(out, rows, result)
    print(f"[autortc] {result['verdict']}: {out / 'report.md'}", flush=True)
    for line in result.get("fail_reasons", []):
        print(f"[autortc]   FAIL {line}", flush=True)
    return 0 if result["verdict"] == "PASS" else 1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", type=Path,
                   default=Path(__file__).parent / "cases" / "mini_cases.json")
    p.add_argument("--only", nargs="*", help="case ids to run")
    p.add_argument("--out", type=Path, default=output_root() / "autortc" / "run")
    p.add_argument("--wav-cache", type=Path, default=None)
    p.add_argument("--run-id", default="")
    p.add_argument("--tier", default="custom")
    p.add_argument("--turns", type=int, default=0, help="cycle the cases up to this many turns")
    p.add_argument("--between-s", type=float, default=0.0, help="wait between cases")
    p.add_argument("--profile", default="ci", help="gate profile in profiles.json (gpu|ci)")
    p.add_argument("--baseline", type=Path, default=None, help="golden summary.json")
    p.add_argument("--pad-s", type=float, default=20.0,
                   help="recording pad: welcome + STT + LLM + TTS + transport")
    p.add_argument("--ready-timeout-s", type=float, default=30.0)
    p.add_argument("--total-timeout-s", type=float, default=900.0)
    p.add_argument("--start-stack", action="store_true", help="start LiveKit + backend + agent")
    p.add_argument("--warmup", action=argparse.BooleanOptionalAction, default=True,
                   help="with --start-stack: one conversation of the first case before the "
                        "measured ones, not measured")
    p.add_argument("--agent-env", nargs="*", default=[], help="KEY=VALUE for the started agent")
    p.add_argument("--omni-env", nargs="*", default=[], help="KEY=VALUE for the dev backend")
    p.add_argument("--livekit-url", default="")
    p.add_argument("--api-key", default="")
    p.add_argument("--api-secret", default="")
    p.add_argument("--agent-name", default=os.environ.get("LIVEKIT_AGENT_NAME", "streamtalk"))
    p.add_argument("--agent-output", default="", help="the agent's STREAMTALK_OUTPUT")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    return run_suite(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
