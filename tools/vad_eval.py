"""VAD evaluation: the agent's Silero VAD over the AutoRTC cases, against their known end of turn.

    python -m tools.vad_eval [--cases DIR|FILE.json] [--only ID,...] [--out FILE.json]

Every recipe file in the cases folder (default `tools/autortc/cases`, all `*.json` with a
`cases` list; a case in several files counts once) is rendered by
`tools/autortc/make_cases.py`, which knows each WAV's first and last speech sample; a
barge-in clip counts as a case of its own (`<id>.barge`). The VAD is the agent's own
(`agent/engine_service.py` `load_vad`, with VAD_SILENCE_MS and VAD_THRESHOLD from the
environment) and hears each WAV in 10 ms frames, as from a room.

Per case: the VAD's end of speech (its end-of-speech event minus the silence it waited)
against the known end of turn (`end_error_ms`, negative = early), when the event came
(`detect_ms` after the end of turn: the `vad_end` point of the agent's trace), and false
triggers: speech segments wholly outside the case's speech. The summary gives the median and
P95 of both and the false triggers on the noise cases (a `noise` recipe). The table is printed
last, the JSON goes to `--out` (default `${STREAMTALK_OUTPUT:-output}/vad_eval.json`). Exit
status 1 when the VAD missed a case's speech or never ended it, 2 on a bad argument.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from agent.config import AgentConfig
from streamtalk_common.paths import REPO_ROOT, output_root
from streamtalk_common.stats import percentile
from streamtalk_common.tables import format_table
from tools.autortc.common import FRAME_MS, read_wav, write_json
from tools.autortc.make_cases import load_cases, make_case

CASES_DIR = REPO_ROOT / "tools" / "autortc" / "cases"


@dataclass
class Segment:
    start_s: float
    end_s: float | None = None  # None: still speech when the audio ended
    detect_s: float | None = None  # when the end-of-speech event came


@dataclass
class CaseResult:
    case: str
    noise: bool
    speech_start_s: float
    eot_s: float
    segments: list[Segment] = field(default_factory=list)
    end_error_ms: float | None = None
    detect_ms: float | None = None
    false_triggers: int = 0
    error: str = ""


def read_case_files(source: Path, only: list[str]) -> list[dict[str, Any]]:
    """The cases of every recipe file in `source` (or of the one file), first occurrence of an
    id wins. In a folder, JSON files without a `cases` list are not case files and are passed
    over."""
    files = sorted(source.glob("*.json")) if source.is_dir() else [source]
    cases: dict[str, dict[str, Any]] = {}
    for f in files:
        try:
            data = json.loads(f.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"{f}: cannot read it as JSON: {exc}") from None
        if not (isinstance(data, dict) and isinstance(data.get("cases"), list)):
            if source.is_dir():
                continue
            raise ValueError(f"{f}: not an AutoRTC cases file (a JSON object with a 'cases' list)")
        for case in load_cases(f):
            cases.setdefault(case["id"], case)
    if not cases:
        raise ValueError(f"{source}: no AutoRTC cases found (files with a 'cases' list)")
    if only:
        unknown = sorted(set(only) - set(cases))
        if unknown:
            raise ValueError(f"unknown case(s) {', '.join(unknown)}; valid: "
                             f"{', '.join(sorted(cases))}")
        return [cases[i] for i in only]
    return list(cases.values())


async def vad_segments(vad: Any, samples: np.ndarray, rate: int) -> list[Segment]:
    """The VAD's speech segments over `samples`, fed in FRAME_MS frames as fast as it takes them."""
    from livekit import rtc
    from livekit.agents import vad as lk_vad

    pcm = np.clip(np.round(samples * 32768.0), -32768, 32767).astype(np.int16)
    step = rate * FRAME_MS // 1000
    pcm = np.concatenate([pcm, np.zeros(-len(pcm) % step, np.int16)])
    stream = vad.stream()
    for i in range(0, len(pcm), step):
        stream.push_frame(rtc.AudioFrame(pcm[i:i + step].tobytes(), rate, 1, step))
    stream.end_input()
    segments: list[Segment] = []
    async for ev in stream:
        if ev.type == lk_vad.VADEventType.START_OF_SPEECH:
            segments.append(Segment(start_s=ev.timestamp - ev.speech_duration))
        elif ev.type == lk_vad.VADEventType.END_OF_SPEECH and segments:
            segments[-1].end_s = ev.timestamp - ev.silence_duration
            segments[-1].detect_s = ev.timestamp
    await stream.aclose()
    return segments


def score(name: str, noise: bool, segments: list[Segment], first_s: float,
          eot_s: float) -> CaseResult:
    r = CaseResult(case=name, noise=noise, speech_start_s=round(first_s, 3), eot_s=round(eot_s, 3),
                   segments=segments)
    audio_end = float("inf")  # an open segment lasts to the end of the audio
    inside = [s for s in segments if s.start_s <= eot_s and (s.end_s or audio_end) >= first_s]
    r.false_triggers = len(segments) - len(inside)
    if not inside:
        r.error = "the VAD heard no speech in the case's speech"
    elif inside[-1].end_s is None:
        r.error = "the VAD still heard speech when the audio ended"
    else:
        r.end_error_ms = round((inside[-1].end_s - eot_s) * 1000, 1)
        r.detect_ms = round((inside[-1].detect_s - eot_s) * 1000, 1)
    return r


async def evaluate(cases: list[dict[str, Any]], work: Path,
                   config: AgentConfig) -> list[CaseResult]:
    from agent.engine_service import load_vad  # the TTS engine's module: imported only when run

    vad = load_vad(config)
    results = []
    for case in cases:
        wavs = make_case(case, work)
        for key, path in wavs.items():
            spec = case if key == "wav" else case["barge_in"]
            meta = json.loads(path.with_suffix(".json").read_text())
            samples, rate = read_wav(path)
            segments = await vad_segments(vad, samples, rate)
            name = case["id"] if key == "wav" else f"{case['id']}.barge"
            results.append(score(name, "noise" in spec, segments,
                                 meta["first_speech_sample"] / rate,
                                 meta["last_speech_sample"] / rate))
    return results


def summarize(results: list[CaseResult]) -> dict[str, Any]:
    errors = [r.end_error_ms for r in results if r.end_error_ms is not None]
    detects = [r.detect_ms for r in results if r.detect_ms is not None]
    return {
        "cases": len(results), "failed": [r.case for r in results if r.error],
        "end_error_ms_p50": percentile(errors, 50), "end_error_ms_p95": percentile(errors, 95),
        "abs_end_error_ms_p95": percentile([abs(e) for e in errors], 95),
        "detect_ms_p50": percentile(detects, 50), "detect_ms_p95": percentile(detects, 95),
        "noise_cases": sum(r.noise for r in results),
        "false_triggers_noise_cases": sum(r.false_triggers for r in results if r.noise),
        "false_triggers_all": sum(r.false_triggers for r in results),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tools.vad_eval", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", type=Path, default=CASES_DIR,
                   help="a folder of case files or one case file")
    p.add_argument("--only", default="", help="comma-separated case ids (default: every case)")
    p.add_argument("--out", type=Path, default=None,
                   help="result JSON (default: $STREAMTALK_OUTPUT/vad_eval.json)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = AgentConfig.from_env()
        cases = read_case_files(args.cases, [i.strip() for i in args.only.split(",") if i.strip()])
    except ValueError as exc:  # AgentConfigError included
        print(f"vad_eval: {exc}", file=sys.stderr)
        return 2
    started = time.monotonic()
    results = asyncio.run(evaluate(cases, output_root() / "vad_eval" / "cases", config))
    summary = summarize(results)
    out = write_json(args.out or output_root() / "vad_eval.json", {
        "date": time.strftime("%Y-%m-%d"), "wall_s": round(time.monotonic() - started, 1),
        "vad": {"silence_ms": config.vad_silence_ms, "threshold": config.vad_threshold},
        "summary": summary, "cases": [asdict(r) for r in results]})
    print(f"wrote {out}", file=sys.stderr)
    rows = [{"case": r.case, "noise": r.noise, "eot_s": r.eot_s, "segments": len(r.segments),
             "end_error_ms": r.end_error_ms, "detect_ms": r.detect_ms,
             "false_triggers": r.false_triggers, "error": r.error or None} for r in results]
    print(format_table(f"Silero VAD (silence {config.vad_silence_ms} ms, threshold "
                       f"{config.vad_threshold}) against the known end of turn", rows))
    s = summary
    print(f"\nend error P50 {s['end_error_ms_p50']} ms, P95 {s['end_error_ms_p95']} ms; "
          f"end-of-speech event P50 {s['detect_ms_p50']} ms, P95 {s['detect_ms_p95']} ms after the "
          f"end of turn; false triggers {s['false_triggers_noise_cases']} on {s['noise_cases']} "
          f"noise cases, {s['false_triggers_all']} in all; failed: "
          f"{', '.join(s['failed']) or 'none'}")
    return 1 if summary["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
